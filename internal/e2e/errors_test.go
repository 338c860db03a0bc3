//go:build linux

package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// Each startup error gives one line on stderr naming the problem, exit 2
// for usage errors and 1 for runtime ones, before any worker starts.
func TestRunStartupErrors(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	// A worker that would leave a trace if it ever started.
	marker := filepath.Join(dir, "started")
	trap := filepath.Join(dir, "trap.sh")
	os.WriteFile(trap, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	ctl := filepath.Join(dir, "ctl.sock")

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"port in use", []string{"--listen", "http=tcp://" + taken.Addr().String(), "--", trap}, 1, "already in use"},
		{"bad listen url", []string{"--listen", "http=tcp//127.0.0.1:1", "--", trap}, 2, "want SCHEME://ADDRESS"},
		{"bad scheme", []string{"--listen", "http=sctp://127.0.0.1:1", "--", trap}, 2, `unknown scheme "sctp"`},
		{"bad port", []string{"--listen", "http=tcp://127.0.0.1:http2x", "--", trap}, 2, "bad port"},
		{"no name", []string{"--listen", "tcp://127.0.0.1:1", "--", trap}, 2, "want NAME=SCHEME://ADDRESS"},
		{"duplicate name", []string{"--listen", "a=tcp://127.0.0.1:0", "--listen", "a=tcp://127.0.0.1:0", "--", trap}, 2, `name "a" used twice`},
		{"missing command", []string{"--listen", "http=tcp://127.0.0.1:0", "--", filepath.Join(dir, "nope")}, 1, "no such file or directory"},
		{"command not in PATH", []string{"--listen", "http=tcp://127.0.0.1:0", "--", "handoff-no-such-command"}, 1, "executable file not found"},
		{"not executable", []string{"--listen", "http=tcp://127.0.0.1:0", "--", notExec}, 1, "permission denied"},
		{"workers 0", []string{"--workers", "0", "--", trap}, 2, "--workers \"0\""},
		{"workers junk", []string{"--workers", "many", "--", trap}, 2, "--workers \"many\""},
		{"workers too many", []string{"--workers", "100000", "--", trap}, 2, "--workers \"100000\": want auto or a number from 1 to 1024"},
		{"bad min uptime", []string{"--min-uptime", "-1s", "--", trap}, 2, `--min-uptime "-1s": must not be negative`},
		{"bad retire parallel", []string{"--retire-parallel", "0", "--", trap}, 2, `--retire-parallel "0": want a number from 1 to 1024`},
		{"unknown flag", []string{"--wrokers", "2", "--", trap}, 2, "unknown flag: --wrokers (did you mean --workers?)"},
		{"flag typo", []string{"--worker", "2", "--", trap}, 2, "unknown flag: --worker (did you mean --workers?)"},
		{"flag prefix", []string{"--drain", "2s", "--", trap}, 2, "unknown flag: --drain (did you mean --drain-timeout?)"},
		{"one dash", []string{"-workers", "2", "--", trap}, 2, "unknown flag -workers: long flags take two dashes: --workers"},
		{"flag without value", []string{"--workers"}, 2, "flag needs an argument: --workers"},
		{"no command", []string{"--listen", "http=tcp://127.0.0.1:0"}, 2, "no command given"},
		{"bad ready", []string{"--ready", "soon", "--", trap}, 2, `--ready "soon"`},
		{"bad signal", []string{"--stop-signal", "SIGNOPE", "--", trap}, 2, "unknown signal"},
		{"bad strategy", []string{"--reload-strategy", "yolo", "--", trap}, 2, "--reload-strategy"},
		{"bad balance", []string{"--balance", "random", "--", trap}, 2, `--balance "random": want steer, sticky or shared`},
		{"bad worker output", []string{"--worker-output", "syslog", "--", trap}, 2, `--worker-output "syslog": want auto, inherit, prefix or json`},
		{"bad max memory", []string{"--max-memory", "lots", "--", trap}, 2, `--max-memory "lots": want a size such as 512MiB`},
		{"max memory without unit", []string{"--max-memory", "512", "--", trap}, 2, `--max-memory "512": 512 bytes is below 1MiB`},
		{"bad admin", []string{"--admin", "9100", "--", trap}, 2, `--admin "9100": want HOST:PORT`},
		{"ready http path", []string{"--ready", "http=healthz", "--listen", "http=tcp://127.0.0.1:0", "--", trap}, 2, `--ready "http=healthz": want http=/PATH`},
		{"ready tcp without listener", []string{"--ready", "tcp", "--", trap}, 2, `--ready "tcp" needs a tcp or unix listener to probe`},
		{"ready delay too long", []string{"--ready", "delay=2s", "--ready-timeout", "1s", "--", trap}, 2, `--ready "delay=2s" must be shorter than --ready-timeout "1s"`},
		{"env set by handoff", []string{"--env", "LISTEN_FDS=9", "--", trap}, 2, `--env "LISTEN_FDS=9": LISTEN_FDS is set by handoff for each worker`},
		{"unix options on tcp", []string{"--listen", "a=tcp://127.0.0.1:0?mode=0660", "--", trap}, 2, "options after '?' are for unix listeners only"},
		{"unix mode", []string{"--listen", "a=unix://" + dir + "/a.sock?mode=abc", "--", trap}, 2, `mode "abc": want an octal mode such as 0660`},
		{"unix owner", []string{"--listen", "a=unix://" + dir + "/a.sock?owner=no-such-user-here", "--", trap}, 1, `owner "no-such-user-here": no such user`},
		{"unknown user", []string{"--user", "no-such-user-here", "--", trap}, 1, `--user "no-such-user-here": no such user`},
		{"unknown group", []string{"--group", "no-such-group-here", "--", trap}, 1, `--group "no-such-group-here": no such group`},
		{"control path too long", []string{"--control", "/" + strings.Repeat("c", 110), "--", trap}, 2, "unix socket path is 111 bytes, the limit is 107"},
		{"config missing", []string{"--config", filepath.Join(dir, "none.hcl")}, 1, "config file: open " + filepath.Join(dir, "none.hcl") + ": no such file or directory"},
		{"config syntax", []string{"--config", writeConfig(t, dir, "syntax.hcl", "command = [\"/bin/true\"\nworkers = 2\n")}, 2, "syntax.hcl:2:1: Missing item separator"},
		{"config unknown key", []string{"--config", writeConfig(t, dir, "key.hcl", "command = [\"/bin/true\"]\nworker = 2\n")}, 2, `key.hcl:2:1: Unsupported argument: An argument named "worker" is not expected here. Did you mean "workers"?`},
		{"config bad value", []string{"--config", writeConfig(t, dir, "value.hcl", "command = [\"/bin/true\"]\n\nworkers = 0\n")}, 2, "value.hcl:3:11: workers = 0: want auto or a number from 1 to 1024"},
		{"config command missing", []string{"--config", writeConfig(t, dir, "cmd.hcl", "command = [\"/nonexistent/app\"]\n")}, 1, `cmd.hcl:1:11: command "/nonexistent/app": no such file or directory`},
		{"config without command", []string{"--config", writeConfig(t, dir, "nocmd.hcl", "workers = 2\n")}, 2, "no command given"},
		{"flag over config", []string{"--config", writeConfig(t, dir, "ok.hcl", "command = [\"/bin/true\"]\n"), "--workers", "0"}, 2, `--workers "0"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"run"}
			if !hasFlag(c.args, "--control") {
				args = append(args, "--control", ctl)
			}
			args = append(args, c.args...)
			// A TMPDIR of its own shows anything the master leaves
			// behind in it (its runtime directory).
			tmp := t.TempDir()
			stdout, stderr, code := runHandoffEnv(t, []string{"TMPDIR=" + tmp}, args...)
			if code != c.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, c.code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "handoff: ") || !strings.Contains(lines[0], c.msg) {
				t.Errorf("stderr %q: want one line 'handoff: …' containing %q", stderr, c.msg)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("a worker started despite the error")
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("the failed master left %s in its TMPDIR", left[0].Name())
			}
			if _, err := os.Stat(ctl); err == nil {
				t.Errorf("the failed master left its control socket")
			}
		})
	}
}

// writeConfig writes a config file for a test and returns its path.
func writeConfig(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A config file with several mistakes gets a line for each, in file
// order, and nothing starts.
func TestRunConfigProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeConfig(t, dir, "app.hcl", `command = ["/bin/true"]
workers = 0
ready_timeout = 25
listen "http" {
  address = "tcp://127.0.0.1:0"
  mode    = "0660"
}
`)
	_, stderr, code := runHandoff(t, "run", "--control", filepath.Join(dir, "c.sock"), "--config", path)
	want := []string{
		"handoff: " + path + ":2:11: workers = 0: want auto or a number from 1 to 1024",
		"handoff: " + path + ":3:17: ready_timeout = 25: want a duration with a unit, e.g. 25s",
		"handoff: " + path + `:6:13: listen "http": mode is for unix listeners only`,
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != 2 || len(lines) != len(want) {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 and %d lines", code, stderr, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: %q, want %q", i, lines[i], want[i])
		}
	}
}

// Client commands with no master, or bad arguments, say so.
func TestClientErrors(t *testing.T) {
	t.Parallel()
	ctl := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "--control", ctl}, 1, "no handoff master at " + ctl},
		{[]string{"reload", "--wait", "--control", ctl}, 1, "no handoff master at"},
		{[]string{"stop", "--control", ctl}, 1, "no handoff master at"},
		{[]string{"status", "--jsn"}, 2, "unknown flag: --jsn (did you mean --json?)"},
		{[]string{"status", "extra"}, 2, `status: unexpected argument "extra"`},
		{[]string{"stop", "--wait", "--timeout", "soon"}, 2, `invalid argument "soon" for "--timeout" flag`},
		{[]string{"stop", "--wait", "--timeout", "-1s", "--control", ctl}, 2, "stop: --timeout -1s: must not be negative"},
		{[]string{"reload", "--timeout", "-1s", "--control", ctl}, 2, "reload: --timeout -1s: must not be negative"},
		{[]string{"status", "--control", "/" + strings.Repeat("s", 120)}, 2, `unix socket path is 121 bytes, the limit is 107`},
		{[]string{"scale", "--control", ctl}, 2, "scale: want one argument, the number of workers (handoff scale N)"},
		{[]string{"scale", "0", "--control", ctl}, 2, `scale "0": want auto or a number from 1 to 1024`},
		{[]string{"scale", "many", "--control", ctl}, 2, `scale "many": want auto or a number`},
		{[]string{"scale", "auto", "--control", ctl}, 1, "no handoff master at " + ctl},
		{[]string{"scale", "3", "--control", ctl}, 1, "no handoff master at " + ctl},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate" (want check, completion, reload, run, scale, status, stop, top or version)`},
		{[]string{"stauts"}, 2, `unknown command "stauts" (did you mean "status"?)`},
		{[]string{"help", "frobnicate"}, 2, `help: unknown command "frobnicate"`},
		{[]string{"completion", "tcsh"}, 2, "completion: want one of bash, zsh or fish"},
		{[]string{"check"}, 2, "check: --config FILE is required"},
	} {
		_, stderr, code := runHandoff(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "handoff: ") {
			t.Errorf("handoff %v: exit %d stderr %q; want exit %d and one line with %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}

// A first generation that can never start (outside systemd) is given up
// after --start-attempts failures of every slot: exit 1 with the reason,
// the control socket removed, no worker left.
func TestFirstGenerationThatNeverStartsGivesUp(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, "/bin/false")
	if code := m.waitExit(60 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	line := m.log.waitLine(t, time.Second, "no worker of the first generation became ready", "every slot failed 5 times")
	if !strings.Contains(line, "exited with status 1 before ready") {
		t.Errorf("the reason is missing: %s", line)
	}
	if _, err := os.Stat(m.ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// A slot waiting out a backoff says why in status: its last worker's end.
func TestStatusShowsWhySlotBacksOff(t *testing.T) {
	m := startMaster(t, []string{"--workers", "1", "--start-attempts", "0"}, "/bin/false")
	m.waitStatus(20*time.Second, "slot 0 in backoff with its reason", func(st workers.Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].State == workers.Backoff && strings.Contains(st.Workers[0].LastExit, "exited with status 1 before ready")
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, _ := m.cli("status")
		if strings.Contains(out, "slot 0 waits to restart: its last worker exited with status 1 before ready") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status does not say why slot 0 waits:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
