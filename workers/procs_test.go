package workers

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExitInfoString(t *testing.T) {
	tests := []struct {
		status unix.WaitStatus
		want   string
	}{
		{0, "exited with status 0"},
		{3 << 8, "exited with status 3"},
		{255 << 8, "exited with status 255"},
		{unix.WaitStatus(unix.SIGKILL), "killed by SIGKILL"},
		{unix.WaitStatus(unix.SIGTERM), "killed by SIGTERM"},
		{unix.WaitStatus(unix.SIGSEGV) | 0x80, "killed by SIGSEGV"}, // core dumped
		{0x137f, "ended (wait status 0x137f)"},                      // stopped by SIGSTOP
	}
	for _, tt := range tests {
		if got := (exitInfo{status: tt.status}).String(); got != tt.want {
			t.Errorf("exitInfo(%#x) = %q, want %q", uint32(tt.status), got, tt.want)
		}
	}
}

// devnullFiles returns stdin, stdout and stderr for a child: /dev/null.
func devnullFiles(t *testing.T) []uintptr {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := f.Fd()
	return []uintptr{fd, fd, fd}
}

func newTestProcs(t *testing.T, orphans func(pid int, e exitInfo)) *procs {
	t.Helper()
	p := newProcs(orphans)
	// Only once every child is reaped: the fork thread's exit kills the
	// ones still alive (Pdeathsig).
	t.Cleanup(p.close)
	return p
}

func waitExit(t *testing.T, pr *proc) exitInfo {
	t.Helper()
	select {
	case e := <-pr.exit:
		return e
	case <-time.After(5 * time.Second):
		pr.signal(syscall.SIGKILL)
		t.Fatalf("pid %d not reaped within 5s", pr.pid)
	}
	panic("unreachable")
}

func TestProcsStartAndReap(t *testing.T) {
	p := newTestProcs(t, nil)
	files := devnullFiles(t)
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"/bin/sh", "-c", "exit 0"}, "exited with status 0"},
		{[]string{"/bin/sh", "-c", "exit 3"}, "exited with status 3"},
		{[]string{"/bin/sh", "-c", "kill -TERM $$"}, "killed by SIGTERM"},
		{[]string{"/bin/sh", "-c", `test "$FOO" = bar`}, "exited with status 0"},
	}
	for _, tt := range tests {
		pr, err := p.start(tt.argv[0], tt.argv, []string{"FOO=bar"}, files)
		if err != nil {
			t.Fatal(err)
		}
		if pr.pid <= 0 {
			t.Fatalf("pid %d", pr.pid)
		}
		if got := waitExit(t, pr).String(); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.argv, got, tt.want)
		}
		pr.release()
		if pr.pidfd != -1 {
			t.Errorf("pidfd %d after release", pr.pidfd)
		}
		pr.release() // twice is harmless
	}
}

// TestProcsManyAtOnce starts children that all exit together: one
// SIGCHLD may stand for several exits, and none may be missed.
func TestProcsManyAtOnce(t *testing.T) {
	p := newTestProcs(t, nil)
	files := devnullFiles(t)
	var prs []*proc
	for i := 0; i < 20; i++ {
		pr, err := p.start("/bin/sh", []string{"sh", "-c", "exit 5"}, nil, files)
		if err != nil {
			t.Fatal(err)
		}
		prs = append(prs, pr)
	}
	for _, pr := range prs {
		if got := waitExit(t, pr).String(); got != "exited with status 5" {
			t.Errorf("pid %d: %s", pr.pid, got)
		}
		pr.release()
	}
}

func TestProcsSignalAndGroup(t *testing.T) {
	p := newTestProcs(t, nil)
	pr, err := p.start("/bin/sleep", []string{"sleep", "30"}, nil, devnullFiles(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.release()
	if pr.pidfd < 0 {
		t.Log("no pidfd on this kernel; signals go by pid")
	}
	// Each worker leads its own process group.
	if pgid, err := unix.Getpgid(pr.pid); err != nil || pgid != pr.pid {
		t.Errorf("pgid %d, %v; want %d", pgid, err, pr.pid)
	}
	if err := pr.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, pr).String(); got != "killed by SIGKILL" {
		t.Errorf("got %s, want killed by SIGKILL", got)
	}
}

func TestProcsStartErrors(t *testing.T) {
	p := newProcs(nil) // closed below
	_, err := p.start("/nonexistent/cmd", []string{"app"}, nil, devnullFiles(t))
	if err == nil || !strings.Contains(err.Error(), "start app") || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("start of a missing command: %v", err)
	}
	p.close()
	if _, err := p.start("/bin/true", []string{"true"}, nil, devnullFiles(t)); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("start after close: %v, want shutting down", err)
	}
}

// TestProcsLeavesOtherChildren checks that a normal master reaps only its
// own workers: a child started elsewhere (tableflip's new master) keeps
// its exit status for whoever started it.
func TestProcsLeavesOtherChildren(t *testing.T) {
	p := newTestProcs(t, nil)
	other, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 9"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	// A worker's exit makes the reaper look at the children.
	pr, err := p.start("/bin/sh", []string{"sh", "-c", "exit 0"}, nil, devnullFiles(t))
	if err != nil {
		t.Fatal(err)
	}
	waitExit(t, pr)
	pr.release()
	var ws unix.WaitStatus
	got, err := unix.Wait4(other, &ws, 0, nil)
	if err != nil || got != other {
		t.Fatalf("wait for the other child: %d, %v (reaped by procs?)", got, err)
	}
	if ws.ExitStatus() != 9 {
		t.Errorf("other child's status %d, want 9", ws.ExitStatus())
	}
}

// TestProcsReapsOrphans is the pid 1 mode: every exited child is reaped,
// and those the master did not start go to the orphans callback.
func TestProcsReapsOrphans(t *testing.T) {
	type orphan struct {
		pid int
		e   exitInfo
	}
	orphans := make(chan orphan, 10)
	p := newTestProcs(t, func(pid int, e exitInfo) { orphans <- orphan{pid, e} })
	files := devnullFiles(t)
	other, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 9"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := p.start("/bin/sh", []string{"sh", "-c", "exit 4"}, nil, files)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, pr).String(); got != "exited with status 4" {
		t.Errorf("worker: %s", got)
	}
	pr.release()
	select {
	case o := <-orphans:
		if o.pid != other || o.e.String() != "exited with status 9" {
			t.Errorf("orphan %d %s, want %d exited with status 9", o.pid, o.e, other)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the orphan was not reaped")
	}
	select {
	case o := <-orphans:
		t.Errorf("a worker was reported as an orphan: %d %s", o.pid, o.e)
	default:
	}
}
