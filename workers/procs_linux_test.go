package workers

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
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
	if exitedWith(3) != (exitInfo{3 << 8}) || killedBy(unix.SIGKILL) != (exitInfo{unix.WaitStatus(unix.SIGKILL)}) {
		t.Error("exitedWith/killedBy do not build wait statuses")
	}
}

// devnullFiles returns stdin, stdout and stderr for a child: /dev/null.
func devnullFiles(t *testing.T) []int {
	t.Helper()
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	return []int{fd, fd, fd}
}

// outputFiles returns stdin from /dev/null and stdout, stderr into a
// file whose contents the returned function reads.
func outputFiles(t *testing.T) ([]int, func() string) {
	t.Helper()
	files := devnullFiles(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	files[1], files[2] = int(out.Fd()), int(out.Fd())
	return files, func() string {
		b, _ := os.ReadFile(out.Name())
		return string(b)
	}
}

func newTestProcs(t *testing.T, orphans func(pid int, e exitInfo)) *procs {
	t.Helper()
	p := newProcs(hclog.NewNullLogger(), orphans)
	// Only once every child is reaped: the fork thread's exit kills the
	// ones still alive (Pdeathsig).
	t.Cleanup(p.close)
	return p
}

func startSpec(t *testing.T, p *procs, spec procSpec) *proc {
	t.Helper()
	if spec.path == "" {
		spec.path = spec.argv[0]
	}
	if spec.files == nil {
		spec.files = devnullFiles(t)
	}
	if spec.name == "" {
		spec.name = fmt.Sprintf("t%d", time.Now().UnixNano())
	}
	pr, err := p.start(spec)
	if err != nil {
		t.Fatal(err)
	}
	return pr.(*proc)
}

func waitExit(t *testing.T, pr process) exitInfo {
	t.Helper()
	select {
	case e := <-pr.exited():
		return e
	case <-time.After(10 * time.Second):
		pr.signal(syscall.SIGKILL)
		t.Fatalf("pid %d not reaped within 10s", pr.pid())
	}
	panic("unreachable")
}

// waitTreeEmpty waits until no process of pr's tree is left.
func waitTreeEmpty(t *testing.T, pr process) {
	t.Helper()
	if !pollTree(pr, 10*time.Second, nil) {
		t.Fatalf("the tree of pid %d is still there after 10s", pr.pid())
	}
}

func TestProcsStartAndReap(t *testing.T) {
	p := newTestProcs(t, nil)
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
		pr := startSpec(t, p, procSpec{argv: tt.argv, env: []string{"FOO=bar"}})
		if pr.pid() <= 0 {
			t.Fatalf("pid %d", pr.pid())
		}
		if got := waitExit(t, pr).String(); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.argv, got, tt.want)
		}
		waitTreeEmpty(t, pr)
		pr.release()
		if pr.pidfd != -1 || pr.pidf != nil {
			t.Errorf("pidfd %d after release", pr.pidfd)
		}
		pr.release() // twice is harmless
	}
}

// TestProcsManyAtOnce starts children that all exit together: each is
// reaped, once, with its own status.
func TestProcsManyAtOnce(t *testing.T) {
	p := newTestProcs(t, nil)
	files := devnullFiles(t)
	var prs []*proc
	for i := 0; i < 50; i++ {
		prs = append(prs, startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", fmt.Sprintf("exit %d", i%7)}, files: files}))
	}
	for i, pr := range prs {
		if got, want := waitExit(t, pr).String(), fmt.Sprintf("exited with status %d", i%7); got != want {
			t.Errorf("pid %d: %s, want %s", pr.pid(), got, want)
		}
		waitTreeEmpty(t, pr)
		pr.release()
	}
}

func TestProcsSignalAndGroup(t *testing.T) {
	p := newTestProcs(t, nil)
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sleep", "30"}})
	defer pr.release()
	if pr.pidfd < 0 {
		t.Log("no pidfd on this kernel; signals go by pid")
	}
	// Each worker leads its own process group.
	if pgid, err := unix.Getpgid(pr.pid()); err != nil || pgid != pr.pid() {
		t.Errorf("pgid %d, %v; want %d", pgid, err, pr.pid())
	}
	if err := pr.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, pr).String(); got != "killed by SIGKILL" {
		t.Errorf("got %s, want killed by SIGKILL", got)
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := bytes.Cut(b, []byte(") "))
	return len(rest) > 0 && rest[0] != 'Z'
}

// readPid waits for a file holding a pid.
func readPid(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// TestProcsTreeSignalled: a worker that started a helper ("sh -c 'helper
// & exec server'") has its whole tree stopped, and the tree is not empty
// until the helper is gone too.
func TestProcsTreeSignalled(t *testing.T) {
	p := newTestProcs(t, nil)
	helperPid := filepath.Join(t.TempDir(), "helper.pid")
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + helperPid + "; exec sleep 300"}})
	defer pr.release()
	helper := readPid(t, helperPid)
	if err := pr.signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, pr).String(); got != "killed by SIGTERM" {
		t.Errorf("main process: %s", got)
	}
	waitTreeEmpty(t, pr)
	if alive(helper) {
		t.Errorf("helper %d survived its worker's stop signal", helper)
	}
}

// TestProcsLeftoverTree: the main process exits on its own and leaves a
// helper behind; the tree is not empty, and SIGKILL to the tree ends it.
func TestProcsLeftoverTree(t *testing.T) {
	p := newTestProcs(t, nil)
	helperPid := filepath.Join(t.TempDir(), "helper.pid")
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", "trap '' TERM; (trap '' TERM; exec sleep 300) & echo $! > " + helperPid + "; exit 0"}})
	defer pr.release()
	helper := readPid(t, helperPid)
	if got := waitExit(t, pr).String(); got != "exited with status 0" {
		t.Errorf("main process: %s", got)
	}
	if pr.treeEmpty() {
		t.Fatal("tree empty while the helper runs")
	}
	pr.signal(unix.SIGTERM) // ignored by the helper
	if pollTree(pr, 200*time.Millisecond, nil) {
		t.Fatal("the helper ignores SIGTERM, yet the tree emptied")
	}
	pr.signal(unix.SIGKILL)
	waitTreeEmpty(t, pr)
	if alive(helper) {
		t.Errorf("helper %d survived SIGKILL of its tree", helper)
	}
}

// TestProcsCgroupCatchesSetsid: with cgroups, a helper that left the
// process group (setsid) is still part of the worker's tree.
func TestProcsCgroupCatchesSetsid(t *testing.T) {
	p := newTestProcs(t, nil)
	if p.cg == nil {
		t.Skip("no cgroups for workers here (not root, and no delegation)")
	}
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid not installed")
	}
	helperPid := filepath.Join(t.TempDir(), "helper.pid")
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", "setsid sh -c 'echo $$ > " + helperPid + "; exec sleep 300' & exec sleep 300"}})
	defer pr.release()
	helper := readPid(t, helperPid)
	if pg, _ := unix.Getpgid(helper); pg == pr.pid() {
		t.Fatalf("helper %d is still in the worker's process group", helper)
	}
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", helper))
	if !strings.Contains(string(own), filepath.Base(pr.cg.dir)) {
		t.Errorf("helper's cgroup %q is not the worker's %s", own, pr.cg.dir)
	}
	pr.signal(unix.SIGKILL)
	waitExit(t, pr)
	waitTreeEmpty(t, pr)
	if alive(helper) {
		t.Errorf("setsid helper %d survived its worker's cgroup kill", helper)
	}
	dir := pr.cg.dir
	pr.release()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("worker cgroup %s left behind: %v", dir, err)
	}
}

// TestProcsShimSetsListenPID: through the shim, LISTEN_PID is the
// worker's own pid, argv[0] is the one given, and the environment is
// otherwise as given.
func TestProcsShimSetsListenPID(t *testing.T) {
	for _, goShim := range []bool{false, true} {
		t.Run(fmt.Sprintf("go-fallback=%v", goShim), func(t *testing.T) {
			p := newTestProcs(t, nil)
			if !goShim && p.shim == nil {
				t.Skip("no built-in shim on this architecture")
			}
			if goShim {
				p.shim = nil
			}
			files, out := outputFiles(t)
			pr := startSpec(t, p, procSpec{
				path:      "/bin/sh",
				argv:      []string{"my-shell", "-c", `printf '%s %s %s %s|' "$LISTEN_PID" "$$" "$0" "$FOO"; tr '\0' ' ' < /proc/$$/cmdline`},
				env:       []string{"FOO=bar", "LISTEN_FDS=1"},
				files:     files,
				listenPID: true,
			})
			if got := waitExit(t, pr).String(); got != "exited with status 0" {
				t.Fatalf("%s; output %q", got, out())
			}
			pr.release()
			pid := strconv.Itoa(pr.pid())
			want := pid + " " + pid + " my-shell bar|my-shell -c "
			if got := out(); !strings.HasPrefix(got, want) {
				t.Errorf("output %q, want prefix %q", got, want)
			}
		})
	}
}

func TestProcsShimExecFailure(t *testing.T) {
	p := newTestProcs(t, nil)
	if p.shim == nil {
		t.Skip("no built-in shim on this architecture")
	}
	files, out := outputFiles(t)
	pr := startSpec(t, p, procSpec{path: "/nonexistent/app", argv: []string{"app"}, files: files, listenPID: true})
	if got := waitExit(t, pr).String(); got != "exited with status 127" {
		t.Errorf("got %s, want exited with status 127", got)
	}
	pr.release()
	if got, want := out(), "handoff: cannot execute worker command /nonexistent/app\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestProcsShimRefused: when the kernel will not execute the shim, the
// start falls back to handoff's own binary, and keeps doing so.
func TestProcsShimRefused(t *testing.T) {
	p := newTestProcs(t, nil)
	if p.shim == nil {
		t.Skip("no built-in shim on this architecture")
	}
	p.shim.path = "/nonexistent/shim" // as if exec of the memfd were refused
	files, out := outputFiles(t)
	pr := startSpec(t, p, procSpec{path: "/bin/sh", argv: []string{"sh", "-c", `echo "$LISTEN_PID $$"`}, env: []string{"LISTEN_FDS=1"}, files: files, listenPID: true})
	waitExit(t, pr)
	pr.release()
	if f := strings.Fields(out()); len(f) != 2 || f[0] != f[1] {
		t.Errorf("output %q: LISTEN_PID is not the pid", out())
	}
	if !p.shim.broken {
		t.Error("shim not marked broken")
	}
}

func TestProcsStartErrors(t *testing.T) {
	p := newProcs(hclog.NewNullLogger(), nil) // closed below
	_, err := p.start(procSpec{path: "/nonexistent/cmd", argv: []string{"app"}, files: devnullFiles(t), name: "e1"})
	if err == nil || !strings.Contains(err.Error(), "start app") || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("start of a missing command: %v", err)
	}
	p.close()
	if _, err := p.start(procSpec{path: "/bin/true", argv: []string{"true"}, files: devnullFiles(t), name: "e2"}); err == nil || !strings.Contains(err.Error(), "shutting down") {
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
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", "exit 0"}})
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
	other, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "exit 9"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	pr := startSpec(t, p, procSpec{argv: []string{"/bin/sh", "-c", "exit 4"}})
	if got := waitExit(t, pr).String(); got != "exited with status 4" {
		t.Errorf("worker: %s", got)
	}
	pr.release()
	select {
	case o := <-orphans:
		if o.pid != other || o.e.String() != "exited with status 9" {
			t.Errorf("orphan %d %s, want %d exited with status 9", o.pid, o.e, other)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the orphan was not reaped")
	}
	select {
	case o := <-orphans:
		t.Errorf("a worker was reported as an orphan: %d %s", o.pid, o.e)
	default:
	}
}

// A master killed with SIGKILL leaves its runtime directory; the next
// master removes it, and leaves a live master's alone.
func TestRuntimeDirStaleRemoved(t *testing.T) {
	// A process of ours that dies: its pid is dead afterwards.
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(os.TempDir(), fmt.Sprintf("handoff-%d-%d-test", pidNamespace(), cmd.Process.Pid))
	live := filepath.Join(os.TempDir(), fmt.Sprintf("handoff-%d-%d-test", pidNamespace(), os.Getppid()))
	for _, d := range []string{dead, live} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(live)
	dir, err := makeRuntimeDir()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead master's directory is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live master's directory was removed: %v", err)
	}
	if !strings.HasPrefix(filepath.Base(dir), fmt.Sprintf("handoff-%d-%d-", pidNamespace(), os.Getpid())) {
		t.Errorf("runtime directory %s", dir)
	}
}
