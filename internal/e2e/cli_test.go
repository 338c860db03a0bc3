//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/cli"
	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/control"
)

// runHandoffEnv runs handoff with extra environment variables.
func runHandoffEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runHandoffIn(t, append(os.Environ(), env...), args...)
}

// runHandoffIn runs handoff with exactly the environment env.
func runHandoffIn(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin.handoff, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("handoff %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// mainInProcess runs Main as the handoff binary would, in this process:
// for commands that start nothing, it is the same code as the binary's
// minus the exec, and much faster than a race-enabled binary.
func mainInProcess(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = cli.Main("", args, &o, &e)
	return o.String(), e.String(), code
}

// 'handoff help run' lists every flag of run with two dashes, under the
// usage line with the command after "--".
func TestHelp(t *testing.T) {
	t.Parallel()
	// The binary once, then in-process.
	if stdout, _, code := runHandoff(t, "help", "run"); code != 0 || !strings.Contains(stdout, "handoff run [flags] -- COMMAND [ARGS...]") {
		t.Fatalf("handoff help run: exit %d\n%s", code, stdout)
	}
	for _, args := range [][]string{{"help", "run"}, {"run", "--help"}, {"run", "-h"}} {
		stdout, stderr, code := mainInProcess(args...)
		if code != 0 || stderr != "" {
			t.Fatalf("handoff %v: exit %d, stderr %q", args, code, stderr)
		}
		if !strings.Contains(stdout, "Usage:\n  handoff run [flags] -- COMMAND [ARGS...]\n") {
			t.Errorf("handoff %v: no usage line with -- COMMAND [ARGS...]:\n%s", args, stdout)
		}
		for _, k := range config.Keys() {
			if !strings.Contains(stdout, "\n      --"+k.Flag+" "+k.Arg+" ") {
				t.Errorf("handoff %v does not show --%s %s", args, k.Flag, k.Arg)
			}
		}
		for _, want := range []string{"--config FILE", "(default auto)", "(default 60s)", "(default steer)"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("handoff %v does not show %q", args, want)
			}
		}
		for _, line := range strings.Split(stdout, "\n") {
			if len([]rune(line)) > 100 {
				t.Errorf("help line longer than 100 columns: %q", line)
			}
		}
	}
	// Every command has help; 'help' alone is the overview.
	stdout, _, code := mainInProcess("help")
	if code != 0 {
		t.Fatalf("handoff help: exit %d", code)
	}
	for _, cmd := range []string{"run", "reload", "status", "stop", "scale", "check", "version", "completion"} {
		if !strings.Contains(stdout, "\n  "+cmd+" ") {
			t.Errorf("handoff help does not list %s:\n%s", cmd, stdout)
		}
		out, stderr, code := mainInProcess("help", cmd)
		if code != 0 || stderr != "" || !strings.Contains(out, "Usage:\n  handoff "+cmd) {
			t.Errorf("handoff help %s: exit %d, stderr %q, stdout:\n%s", cmd, code, stderr, out)
		}
	}
	// No command at all: the overview on stderr, and exit 2.
	stdout, stderr, code := mainInProcess()
	if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage:\n  handoff") {
		t.Errorf("handoff alone: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// Shell completion goes through 'handoff __complete', which knows the
// commands, the flags and their values.
func TestCompletionCandidates(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "st"}, []string{"status", "stop"}},
		{[]string{"__complete", "run", "--bal"}, []string{"--balance"}},
		{[]string{"__complete", "run", "--balance", ""}, []string{"steer", "sticky", "shared"}},
		{[]string{"__complete", "run", "--reload-strategy", ""}, []string{"surge", "rolling"}},
		{[]string{"__complete", "status", "--"}, []string{"--json", "--control"}},
		{[]string{"__complete", "completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"__complete", "help", "re"}, []string{"reload"}},
	} {
		stdout, stderr, code := mainInProcess(c.args...)
		if code != 0 {
			t.Errorf("handoff %v: exit %d, %s", c.args, code, stderr)
			continue
		}
		for _, w := range c.want {
			found := false
			for _, line := range strings.Split(stdout, "\n") {
				found = found || strings.SplitN(line, "\t", 2)[0] == w
			}
			if !found {
				t.Errorf("handoff %v: no %q among\n%s", c.args, w, stdout)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, _, code := runHandoff(t, "version")
	other, _, _ := runHandoff(t, "--version")
	if code != 0 || stdout != other || !strings.HasPrefix(stdout, "handoff ") {
		t.Fatalf("version: %q (exit %d), --version: %q", stdout, code, other)
	}
	v := strings.TrimSpace(strings.TrimPrefix(stdout, "handoff "))
	if v == "" || v == "dev" {
		t.Fatalf("version %q: want the build's version", v)
	}
	// What Go recorded in the binary shows.
	bi, err := buildInfo(bin.handoff)
	if err != nil {
		t.Fatal(err)
	}
	if want := cli.BuildVersion(bi); v != want {
		t.Errorf("version %q, want %q from the binary's build information", v, want)
	}
	t.Logf("handoff version: %s", v)
	// -ldflags wins.
	if out, _ := exec.Command(bin.handoff2, "version").Output(); string(out) != "handoff two\n" {
		t.Errorf("the -X main.version=two build says %q", out)
	}
}

// buildInfo reads the build information of the binary at path.
func buildInfo(path string) (*debug.BuildInfo, error) {
	out, err := exec.Command("go", "version", "-m", path).Output()
	if err != nil {
		return nil, err
	}
	// go version -m prints "path: go1.x" first, then tab-indented lines,
	// which debug.ParseBuildInfo wants without the indent.
	_, rest, _ := strings.Cut(string(out), "\n")
	var lines []string
	for _, l := range strings.Split(rest, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "\t"))
	}
	return debug.ParseBuildInfo("go\tgo1\n" + strings.Join(lines, "\n"))
}

// .ci/gendocs writes the completion scripts and man pages, and checks
// them with the shells and groff that are installed.
func TestGenDocs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		skipf(t, "builds handoff with -tags gendocs")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", ".ci/gendocs", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash .ci/gendocs: %v\n%s", err, b)
	} else {
		t.Logf(".ci/gendocs:\n%s", b)
	}
	for file, want := range map[string]string{
		"completion/handoff.bash": "__start_handoff",
		"completion/handoff.zsh":  "#compdef handoff",
		"completion/handoff.fish": "complete -c handoff",
		"man1/handoff.1":          `.TH "HANDOFF" "1"`,
		"man1/handoff-run.1":      `\fB--workers\fP=auto`,
		"man1/handoff-check.1":    "config",
		"man1/handoff-scale.1":    "scale",
	} {
		b, err := os.ReadFile(filepath.Join(out, file))
		if err != nil || !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s: %v; want it to contain %q", file, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "man1", "handoff-man.1")); err == nil {
		t.Error("the hidden man command got a man page")
	}
	if _, err := exec.LookPath("man"); err == nil {
		b, err := exec.Command("man", "-l", "-P", "cat", filepath.Join(out, "man1", "handoff-run.1")).CombinedOutput()
		if err != nil || !bytes.Contains(b, []byte("--ready-timeout")) {
			t.Errorf("man -l handoff-run.1: %v\n%s", err, b)
		}
	}
	// The normal build has no man command.
	if _, stderr, code := runHandoff(t, "man", out); code != 2 || !strings.Contains(stderr, `unknown command "man"`) {
		t.Errorf("handoff man: exit %d, %q; want no such command outside -tags gendocs", code, stderr)
	}
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeConfig(t, dir, "good.hcl", `command = ["`+bin.hello1+`"]
listen "http" { address = "tcp://127.0.0.1:0" }
workers = 2
`)
	stdout, stderr, code := runHandoff(t, "check", "--config", good)
	if code != 0 || stdout != "config "+good+" ok\n" || stderr != "" {
		t.Errorf("check good: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// A warning does not fail the check.
	quiet := writeConfig(t, dir, "quiet.hcl", `command = ["`+bin.hello1+`"]`+"\n")
	stdout, stderr, code = runHandoff(t, "check", "--config", quiet)
	if code != 0 || stdout != "config "+quiet+" ok\n" || !strings.Contains(stderr, "handoff: warning: no listen sockets configured") {
		t.Errorf("check without listeners: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Every problem, one line each, exit 1 whatever the kind.
	bad := writeConfig(t, dir, "bad.hcl", `command = ["`+bin.hello1+`"]
workers = "lots"
balance = "fair"
user    = "no-such-user-here"
`)
	stdout, stderr, code = runHandoff(t, "check", "--config", bad)
	want := []string{
		"handoff: " + bad + `:2:11: workers = "lots": want auto`,
		"handoff: " + bad + `:3:11: balance = "fair": want steer, sticky or shared`,
		"handoff: " + bad + `:4:11: user = "no-such-user-here": no such user`,
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || stdout != "" || len(lines) != len(want) {
		t.Fatalf("check bad: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: %q, want %q…", i, lines[i], want[i])
		}
	}
	// An unknown key does not hide the bad values, nor a syntax error
	// the values before it: one run, every problem.
	mixed := writeConfig(t, dir, "mixed.hcl", `command = ["`+bin.hello1+`"]
workers = 0
bogus = 1
balance = "fair"
ready_timeout =
`)
	_, stderr, code = runHandoff(t, "check", mixed)
	want = []string{
		"handoff: " + mixed + `:5:16: Invalid expression`,
		"handoff: " + mixed + `:3:1: Unsupported argument`,
		"handoff: " + mixed + `:2:11: workers = 0: want auto`,
		"handoff: " + mixed + `:4:11: balance = "fair": want steer, sticky or shared`,
	}
	lines = strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 1 || len(lines) != len(want) {
		t.Fatalf("check mixed: exit %d, stderr:\n%s", code, stderr)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("check mixed, line %d: %q, want %q…", i, lines[i], want[i])
		}
	}
	// A syntax error is HCL's diagnostic with its position.
	syntax := writeConfig(t, dir, "syntax.hcl", "listen \"http\" {\n  address = \"tcp://127.0.0.1:0\"\n")
	_, stderr, code = runHandoff(t, "check", "--config", syntax)
	if code != 1 || !strings.HasPrefix(stderr, "handoff: "+syntax+":1:15: Unclosed configuration block") {
		t.Errorf("check syntax: exit %d, stderr %q", code, stderr)
	}
	// The annotated example passes once its command exists here.
	example, err := os.ReadFile("examples/config/handoff.hcl")
	if err != nil {
		t.Fatal(err)
	}
	local := writeConfig(t, dir, "example.hcl", strings.Replace(string(example), `["/opt/app/bin/server", "--port-from-fd"]`, `["`+bin.hello1+`"]`, 1))
	if stdout, stderr, code := runHandoff(t, "check", "--config", local); code != 0 {
		t.Errorf("check the example: exit %d, %s%s", code, stdout, stderr)
	}
}

// The scale client sends {"cmd":"scale","workers":N} and prints the
// master's answer.
func TestScaleClient(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "c.sock")
	ln, err := control.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reqs := make(chan control.Request, 4)
	srv := control.FromListener(ln, func(ctx context.Context, req control.Request) control.Response {
		reqs <- req
		if req.Workers == 13 {
			return control.Response{Error: "not now: a reload is running"}
		}
		b, _ := json.Marshal(map[string]int{"workers": req.Workers})
		return control.Response{OK: true, Result: b}
	}, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	stdout, stderr, code := runHandoff(t, "scale", "3", "--control", path)
	if code != 0 || stdout != "scaling to 3 workers\n{\"workers\":3}\n" || stderr != "" {
		t.Errorf("scale 3: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := <-reqs; got != (control.Request{Cmd: "scale", Workers: 3}) {
		t.Errorf("the master got %+v", got)
	}
	_, stderr, code = runHandoff(t, "scale", "--control", path, "13")
	if code != 1 || stderr != "handoff: scale: not now: a reload is running\n" {
		t.Errorf("scale refused: exit %d, stderr %q", code, stderr)
	}
	<-reqs
}

// With no flag and no runtime directory in the environment, root's
// clients look for /run/handoff/handoff.sock, where systemd's
// RuntimeDirectory=handoff puts it.
func TestDefaultControlPath(t *testing.T) {
	t.Parallel()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNTIME_DIRECTORY=") && !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			env = append(env, kv)
		}
	}
	tmp := t.TempDir()
	env = append(env, "TMPDIR="+tmp)
	want := filepath.Join(tmp, "handoff-"+strconv.Itoa(os.Geteuid()), "handoff.sock")
	if os.Geteuid() == 0 {
		want = "/run/handoff/handoff.sock"
	}
	_, stderr, code := runHandoffIn(t, env, "status")
	if code == 0 {
		skipf(t, "a handoff master answers at %s on this machine", want)
	}
	if code != 1 || stderr != "handoff: no handoff master at "+want+" (is it running? use --control to name its socket)\n" {
		t.Errorf("status: exit %d, stderr %q; want no master at %s", code, stderr, want)
	}
	_, stderr, _ = runHandoffIn(t, append(env, "XDG_RUNTIME_DIR="+tmp), "status")
	if !strings.Contains(stderr, "no handoff master at "+tmp+"/handoff.sock ") {
		t.Errorf("with XDG_RUNTIME_DIR: %q", stderr)
	}
	_, stderr, _ = runHandoffIn(t, append(env, "XDG_RUNTIME_DIR=/nowhere", "RUNTIME_DIRECTORY="+tmp+"/rt:/other"), "status")
	if !strings.Contains(stderr, "no handoff master at "+tmp+"/rt/handoff.sock ") {
		t.Errorf("with RUNTIME_DIRECTORY: %q", stderr)
	}
	// A default path too long for a socket is named as such.
	long := tmp + "/" + strings.Repeat("x", 100)
	_, stderr, code = runHandoffIn(t, append(env, "XDG_RUNTIME_DIR="+long), "status")
	if code != 1 || !strings.Contains(stderr, "handoff: control socket "+long+"/handoff.sock: unix socket path is") {
		t.Errorf("long default: exit %d, %q", code, stderr)
	}
}

// --user needs root: as another user, handoff refuses before starting
// anything.
func TestUserNeedsRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		_, stderr, code := runHandoff(t, "run", "--control", filepath.Join(t.TempDir(), "c"), "--user", "root", "--", "/bin/true")
		if code != 1 || !strings.Contains(stderr, `--user "root": needs root (handoff runs as uid `) {
			t.Errorf("exit %d, %q", code, stderr)
		}
		return
	}
	// Run a copy of handoff as nobody, from a directory nobody can read.
	dir, err := os.MkdirTemp("", "hu-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "handoff")
	b, err := os.ReadFile(bin.handoff)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "root"}, `handoff: --user "root": needs root (handoff runs as uid 65534)`},
		{[]string{"--group", "root"}, `handoff: --group "root": needs root (handoff is not in group 0)`},
		{[]string{"--listen", "a=unix://" + dir + "/a.sock?owner=root"}, `owner "root": needs root (handoff runs as uid 65534)`},
	} {
		args := append(append([]string{"run", "--control", dir + "/c.sock"}, c.args...), "--", "/bin/true")
		cmd := exec.Command(exe, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("as nobody, %v: %v, stderr %q; want exit 1 and %q", c.args, err, stderr.String(), c.want)
		}
	}
}

// A master run from a config file takes its settings from it, with the
// command-line flags over them.
func TestRunConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, "app.hcl", `
command = ["`+bin.hello1+`"]
workers = 2
listen "http" {
  address = "tcp://127.0.0.1:1"   # replaced by the command line's --listen
}
ready_timeout = "30s"
`)
	m := startMaster(t, []string{"--config", path, "--listen", "http=tcp://127.0.0.1:0"})
	m.waitServing(1, 2)
	body, err := get(m.addr(), "/")
	if err != nil || field(body, "version") != "v1" {
		t.Fatalf("answer %q, %v", body, err)
	}
	if st, _ := m.status(); st.Listeners[0].Addr == "127.0.0.1:1" {
		t.Errorf("the file's listener was used despite --listen")
	}
}

// A master stopped with 'stop --wait' is waited for even when nobody
// reaps it: its pidfd says when it exits, where kill(pid, 0) would go on
// succeeding for the zombie.
func TestStopWaitZombieMaster(t *testing.T) {
	dir, err := os.MkdirTemp("", "hz-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "c.sock")
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin.handoff, "run", "--control", ctl, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0", "--", bin.hello1)
	// A file, not a pipe: no goroutine of os/exec waits on it, and
	// nothing calls cmd.Wait until the end.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("master log:\n%s", b)
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := control.Do(ctx, ctl, control.Request{Cmd: "status"})
		cancel()
		if err == nil && resp.OK && strings.Contains(string(resp.Result), `"serving":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("master not serving after 60s: %v", err)
		}
	}
	stdout, stderr, code := runHandoff(t, "stop", "--wait", "--timeout", "60s", "--control", ctl)
	want := "master " + strconv.Itoa(cmd.Process.Pid) + " stopped\n"
	if code != 0 || stdout != want {
		t.Fatalf("stop --wait: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
	}
	// It was a zombie until now.
	if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
		t.Errorf("kill(pid, 0) = %v before the master was reaped: the test did not wait for a zombie", err)
	}
	err = cmd.Wait()
	reaped = true
	if err != nil {
		t.Errorf("master exited with %v", err)
	}
}
