package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/internal/testutil"
	"github.com/handoff-dev/handoff/workers"
)

// fakeControl serves h on a control socket until the test ends and
// returns its path.
func fakeControl(t *testing.T, h control.Handler) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "c.sock")
	ln, err := control.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.FromListener(ln, h, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		ln.Close()
	})
	return path
}

func TestTermSafe(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want, lines string }{
		{"ready, 3 conns", "ready, 3 conns", "ready, 3 conns"},
		{"\x1b[2J\x1b]0;owned\x07", `\x1b[2J\x1b]0;owned\x07`, `\x1b[2J\x1b]0;owned\x07`},
		{"a\rb\tc\x7f", `a\x0db\x09c\x7f`, `a\x0db\x09c\x7f`},
		{"two\nlines", `two\x0alines`, "two\nlines"},
		{"c1 \u009b31m", `c1 \u009b31m`, `c1 \u009b31m`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`, `bidi \u202egnp.exe`},
		{"bad \xff\xfe utf-8", `bad \xff\xfe utf-8`, `bad \xff\xfe utf-8`},
		{`a\x1b stays`, `a\x1b stays`, `a\x1b stays`},
		{"héllo, 世界", "héllo, 世界", "héllo, 世界"},
	} {
		if got := termSafe(c.in); got != c.want {
			t.Errorf("termSafe(%q) = %q, want %q", c.in, got, c.want)
		}
		if got := termSafeLines(c.in); got != c.lines {
			t.Errorf("termSafeLines(%q) = %q, want %q", c.in, got, c.lines)
		}
	}
}

// A worker's STATUS= text reaches the terminal with its escape sequences
// shown, not obeyed.
func TestPrintStatusEscapes(t *testing.T) {
	t.Parallel()
	st := workers.Status{
		PID: 1, Generation: 1, Serving: true, Phase: workers.MasterServing,
		Workers:    []workers.WorkerStatus{{Slot: 0, PID: 2, Generation: 1, Status: "\x1b[2J\x1b[Hpwned\x1b]0;title\x07\tx"}},
		Listeners:  []workers.ListenerStatus{{Name: "h\x1b[31m", Network: "tcp", Addr: "127.0.0.1:1", Balance: "shared"}},
		LastReload: &workers.ReloadResult{Generation: 1, Error: "worker said \x1b[5mboo"},
	}
	var out bytes.Buffer
	printStatus(&out, st)
	if bytes.ContainsAny(out.Bytes(), "\x1b\x07\r") {
		t.Fatalf("raw control characters in the output:\n%q", out.String())
	}
	for _, want := range []string{`\x1b[2J\x1b[Hpwned\x1b]0;title\x07\x09x`, `listener h\x1b[31m tcp://`, `FAILED: worker said \x1b[5mboo`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A failed worker's last stderr lines show under the slot backing off
// and under a failed reload, escaped; an inherited stderr is pointed to.
func TestPrintStatusFailedWorkerStderr(t *testing.T) {
	t.Parallel()
	st := workers.Status{
		PID: 1, Generation: 1, Serving: true, Phase: workers.MasterServing,
		Workers: []workers.WorkerStatus{{Slot: 0, Generation: 1, State: workers.Backoff,
			LastExit: "exited with status 1 before ready", LastStderr: []string{"loading", "boom: \x1b[31mred"}}},
		LastReload: &workers.ReloadResult{Generation: 2, Error: "slot 0: exited with status 1 before ready", FailedPID: 42, Stderr: []string{"boom: missing module\x1b[2J"}},
	}
	var out bytes.Buffer
	printStatus(&out, st)
	if bytes.ContainsAny(out.Bytes(), "\x1b\x07\r") {
		t.Fatalf("raw control characters in the output:\n%q", out.String())
	}
	for _, want := range []string{
		"slot 0 waits to restart: its last worker exited with status 1 before ready\n  its last lines on stderr:\n    loading\n    boom: \\x1b[31mred\n",
		"FAILED: slot 0: exited with status 1 before ready, took 0s\n  the last lines worker 42 wrote to stderr:\n    boom: missing module\\x1b[2J\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, c := range []struct {
		r    workers.ReloadResult
		want string
	}{
		{workers.ReloadResult{}, ""},
		{workers.ReloadResult{FailedPID: 42}, ""}, // read, and empty
		{workers.ReloadResult{FailedPID: 42, StderrInherited: true}, "  worker 42's stderr went to the master's (under systemd: journalctl _PID=42)"},
		{workers.ReloadResult{FailedPID: 42, Stderr: []string{"a", "b"}}, "  the last lines worker 42 wrote to stderr:\n    a\n    b"},
	} {
		if got := failedWorker(c.r); got != c.want {
			t.Errorf("failedWorker(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestStatusExit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		serving bool
		phase   workers.MasterPhase
		want    int
	}{
		{true, workers.MasterServing, 0},
		{true, workers.MasterUpgrading, 0},
		{true, workers.MasterHandedOver, 0},
		{false, workers.MasterStarting, 3},
		{true, workers.MasterStarting, 3},
		{true, workers.MasterStopping, 3},
		{false, workers.MasterServing, 3},
	} {
		if got := statusExit(workers.Status{Serving: c.serving, Phase: c.phase}); got != c.want {
			t.Errorf("serving %v, phase %s: exit %d, want %d", c.serving, c.phase, got, c.want)
		}
	}
}

// exitCode is the status Main gives err once reportError asks an
// exitError for its ExitCode (a change to main.go this branch leaves to
// its owner): 1 for the other runtime errors.
func exitCode(err error) int {
	var xe exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &xe):
		return xe.ExitCode()
	}
	return 1
}

// status exits 3 for a master that answers but does not serve, with the
// table or the JSON printed all the same; 0 when it serves; 1 when there
// is no master.
func TestStatusExitCodes(t *testing.T) {
	t.Parallel()
	st := workers.Status{PID: 7, Generation: 1, Phase: workers.MasterStarting}
	path := fakeControl(t, func(ctx context.Context, req control.Request) control.Response {
		b, _ := json.Marshal(st)
		return control.Response{OK: true, Result: b}
	})
	var out bytes.Buffer
	err := cmdStatus(path, false, &out)
	if exitCode(err) != 3 || err.Error() != "" || !strings.Contains(out.String(), "generation 1 starting") {
		t.Errorf("starting: exit %d, error %q, output %q", exitCode(err), err, out.String())
	}
	out.Reset()
	err = cmdStatus(path, true, &out)
	if exitCode(err) != 3 || !strings.Contains(out.String(), `"phase":"starting"`) {
		t.Errorf("starting, --json: exit %d, output %q", exitCode(err), out.String())
	}
	missing := filepath.Join(testutil.ShortDir(t), "none.sock")
	err = cmdStatus(missing, false, &out)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "no handoff master at "+missing) {
		t.Errorf("no master: exit %d, %v", exitCode(err), err)
	}
	st = workers.Status{PID: 7, Generation: 1, Phase: workers.MasterServing, Serving: true}
	path = fakeControl(t, func(ctx context.Context, req control.Request) control.Response {
		b, _ := json.Marshal(st)
		return control.Response{OK: true, Result: b}
	})
	if err := cmdStatus(path, false, &out); err != nil {
		t.Errorf("serving: %v", err)
	}
}

// 'reload --wait --timeout' that gives up while the reload goes on says
// so, with an exit status of its own; a rollback stays exit 1.
func TestReloadStillRunning(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	path := fakeControl(t, func(ctx context.Context, req control.Request) control.Response {
		if req.Cmd == "status" { // reload --wait's progress
			return control.Response{Error: "no status here"}
		}
		if req.Master {
			return control.Response{Error: "generation 2 rolled back: worker 0 exited with status 1"}
		}
		<-ctx.Done() // the client gave up and closed
		close(gone)
		return control.Response{Error: "client gone"}
	})
	var out bytes.Buffer
	err := cmdReload(reloadOptions{control: &path, wait: true, timeout: 100 * time.Millisecond}, &out)
	if exitCode(err) != exitStillRunning || err.Error() != "reload: still running after 100ms: gave up waiting; the master goes on with it ('handoff status' shows how far it is)" {
		t.Errorf("timeout: exit %d, %v", exitCode(err), err)
	}
	<-gone
	err = cmdReload(reloadOptions{control: &path, wait: true, master: true, timeout: time.Minute}, &out)
	if exitCode(err) != 1 || err.Error() != "reload: generation 2 rolled back: worker 0 exited with status 1" {
		t.Errorf("rollback: exit %d, %v", exitCode(err), err)
	}
}

// The client does not trust a default control directory under $TMPDIR
// that another user could have made: 'stop' says why and stops nothing.
func TestClientUntrustedTmpDir(t *testing.T) {
	// Not parallel: it sets $TMPDIR.
	tmp := testutil.ShortDir(t)
	t.Setenv("TMPDIR", tmp)
	dir := filepath.Join(tmp, "handoff-"+strconv.Itoa(os.Geteuid()))
	os.Mkdir(dir, 0o700)
	os.Chmod(dir, 0o777)
	path := filepath.Join(dir, "handoff.sock")
	ln, err := net.Listen("unix", path) // someone else's socket
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	args := []string{"stop", "--control", path}
	if os.Geteuid() != 0 {
		args = []string{"stop"} // the default path is that one
		t.Setenv("XDG_RUNTIME_DIR", "")
		t.Setenv("RUNTIME_DIRECTORY", "")
	}
	stdout, stderr, code := mainInProcess(args...)
	want := "handoff: control directory " + dir + " has mode 0777, want 0700: group or others may change it (chmod 700 it, or use --control)\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("stop: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
	}
}

// A control socket that answers with an endless line gets one error line.
func TestClientEndlessReply(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.ShortDir(t), "f.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	defer func() {
		ln.Close()
		<-done
	}()
	_, stderr, code := mainInProcess("status", "--control", path)
	if code != 1 || stderr != "handoff: reply from "+path+": more than 4194304 bytes without a newline\n" {
		t.Errorf("status: exit %d, stderr %q", code, stderr)
	}
}

// status --json and scale print the master's JSON with the characters a
// terminal would obey escaped, and it stays the same JSON.
func TestJSONTermSafe(t *testing.T) {
	t.Parallel()
	status := "a\u009b2J b\x7f c\u202e d\u00e9 e\u4e16"
	raw, _ := json.Marshal(map[string]string{"status": status})
	raw = append(raw, []byte("\xff")...) // and a stray byte
	got := jsonTermSafe(raw)
	want := `{"status":"a\u009b2J b\u007f c\u202e d` + "\u00e9" + ` e` + "\u4e16" + `"}\ufffd`
	if got != want {
		t.Fatalf("jsonTermSafe = %q, want %q", got, want)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(strings.TrimSuffix(got, `\ufffd`)), &back); err != nil || back["status"] != status {
		t.Errorf("the escaped JSON decodes to %q, %v; want %q", back["status"], err, status)
	}
}

// mainInProcess runs Main as the handoff binary would, in this process.
func mainInProcess(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = Main("", args, &o, &e)
	return o.String(), e.String(), code
}
