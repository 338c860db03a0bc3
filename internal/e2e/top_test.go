//go:build linux

package e2e

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// waitText waits until the text written so far contains sub, anywhere:
// a terminal's output has its lines among cursor movements.
func (l *logBuf) waitText(t *testing.T, timeout time.Duration, sub string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		text, changed := l.buf.String(), l.cond
		l.mu.Unlock()
		if strings.Contains(text, sub) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %q on the screen within %s; screen:\n%q", sub, timeout, text)
		}
	}
}

// ptyProc is a handoff client running on a pseudo-terminal.
type ptyProc struct {
	cmd    *exec.Cmd
	tty    *os.File // the terminal's master side
	screen *logBuf
	done   chan struct{} // closed when cmd has exited and its output is read
	err    error
}

// startPty runs handoff with args on a new pseudo-terminal of 40x120.
func startPty(t *testing.T, args ...string) *ptyProc {
	t.Helper()
	p := &ptyProc{cmd: exec.Command(bin.handoff, args...), screen: newLogBuf(), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	tty, err := pty.StartWithSize(p.cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	p.tty = tty
	go func() {
		io.Copy(p.screen, tty) // ends with EIO once the process is gone
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		tty.Close()
		if t.Failed() {
			t.Logf("screen of handoff %s:\n%q", strings.Join(args, " "), p.screen.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *ptyProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("still running after %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// gatedMaster starts a master of two testapp workers that get ready once
// the file it returns exists; the file exists when it returns and
// generation 1 serves.
func gatedMaster(t *testing.T, flags ...string) (*master, string) {
	t.Helper()
	dir := t.TempDir()
	ready, release := filepath.Join(dir, "ready"), filepath.Join(dir, "release")
	for _, f := range []string{ready, release} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The release file lets workers exit on SIGTERM at once.
	m := startMaster(t, append([]string{"--workers", "2"}, flags...), bin.testapp, "-mode", "gate", "-gate", ready, "-gate-stop", release)
	m.waitServing(1, 2)
	return m, ready
}

// reloadResult is how a 'handoff reload' run in the background ended.
type reloadResult struct {
	code   int
	stdout string
	err    error
}

// reloadInBackground runs handoff reload with args against m and
// reports on the channel; stdout, if not nil, gets its output as it
// comes.
func reloadInBackground(m *master, stdout *logBuf, args ...string) <-chan reloadResult {
	ch := make(chan reloadResult, 1)
	cmd := exec.Command(bin.handoff, append([]string{"reload", "--control", m.ctl}, args...)...)
	var out strings.Builder
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(stdout, &out)
	} else {
		cmd.Stdout = &out
	}
	var errOut strings.Builder
	cmd.Stderr = &errOut
	go func() {
		err := cmd.Run()
		r := reloadResult{stdout: out.String()}
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
			r.err = errors.New(errOut.String())
		case err != nil:
			r.code, r.err = -1, err
		}
		ch <- r
	}()
	return ch
}

// 'handoff top' on a terminal shows the workers, follows a reload
// through its phases to the new generation, survives a resize, and
// quits on q with status 0.
func TestTopLive(t *testing.T) {
	m, ready := gatedMaster(t)
	st, err := m.status()
	if err != nil {
		t.Fatal(err)
	}
	p := startPty(t, "top", "--control", m.ctl, "--interval", "100ms")
	for _, w := range st.Workers {
		p.screen.waitText(t, 60*time.Second, strconv.Itoa(w.PID))
	}
	p.screen.waitText(t, 60*time.Second, "SLOT")

	// A resize redraws at the new size.
	if err := pty.Setsize(p.tty, &pty.Winsize{Rows: 30, Cols: 100}); err != nil {
		t.Fatal(err)
	}

	// The new generation waits for its gate: the view shows it starting.
	if err := os.Remove(ready); err != nil {
		t.Fatal(err)
	}
	done := reloadInBackground(m, nil, "--wait")
	p.screen.waitText(t, 60*time.Second, "reload to generation 2: starting")
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.code != 0 {
		t.Fatalf("reload --wait: exit %d: %v", r.code, r.err)
	}
	p.screen.waitText(t, 60*time.Second, "generation 2 serving")
	p.screen.waitText(t, 60*time.Second, "reload to generation 2 ok")

	if _, err := p.tty.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("top exited %d after q", code)
	}
}

// Without a terminal, top prints --count plain snapshots and exits 0.
func TestTopPlain(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "serve")
	st := m.waitServing(1, 2)
	stdout, stderr, code := m.cli("top", "--count", "2", "--interval", "50ms")
	if code != 0 || stderr != "" {
		t.Fatalf("top --count 2: exit %d, stderr %q", code, stderr)
	}
	if n := strings.Count(stdout, "\n--- "); n != 1 || !strings.HasPrefix(stdout, "--- ") {
		t.Fatalf("want 2 snapshots, got:\n%s", stdout)
	}
	for _, want := range []string{"generation 1 serving", "SLOT", "CPU", "MEM", "HELD", strconv.Itoa(st.Workers[1].PID), "last reload: none since this master started"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("snapshot lacks %q:\n%s", want, stdout)
		}
	}
	// No master: exit 1 at once, as status does.
	_, stderr, code = runHandoff(t, "top", "--count", "1", "--control", filepath.Join(t.TempDir(), "none.sock"))
	if code != 1 || !strings.Contains(stderr, "no handoff master") {
		t.Errorf("top without a master: exit %d, stderr %q", code, stderr)
	}
	// SIGTERM ends an unbounded plain top with status 0.
	cmd := exec.Command(bin.handoff, "top", "--control", m.ctl, "--interval", "50ms")
	out := newLogBuf()
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.waitText(t, 60*time.Second, "SLOT")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("top after SIGTERM: %v", err)
	}
}
