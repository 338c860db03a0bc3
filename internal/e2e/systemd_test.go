//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/workers"
)

// fakeSystemd owns a NOTIFY_SOCKET, as systemd does for a Type=notify
// unit, and records every datagram with its sender's pid. It takes
// messages as NotifyAccess=main does: only from the main process (the
// first sender, then whichever pid the main process names with
// MAINPID=); expect sees only those.
type fakeSystemd struct {
	path string
	conn *net.UnixConn

	mu   sync.Mutex
	msgs []notifyMsg
	cond chan struct{}
	next int // first message not yet consumed by expect
	main int // the main process
}

type notifyMsg struct {
	pid    int
	fds    int // descriptors that came with it
	fields map[string]string
	raw    string
	// taken is set when the sender was the main process.
	taken bool
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	dir, err := os.MkdirTemp("", "sd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeSystemd{path: filepath.Join(dir, "notify"), cond: make(chan struct{})}
	f.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: f.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := f.conn.SyscallConn()
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	t.Cleanup(func() { f.conn.Close() })
	go f.read()
	return f
}

func (f *fakeSystemd) read() {
	buf := make([]byte, 8192)
	oob := make([]byte, 1024)
	for {
		n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := notifyMsg{fields: map[string]string{}, raw: string(buf[:n])}
		if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
					m.pid = int(cred.Pid)
				}
				// FDSTORE=1 comes with a socket: a real systemd
				// would keep it, this one only counts it.
				if fds, err := unix.ParseUnixRights(&cm); err == nil {
					m.fds += len(fds)
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
		}
		for _, line := range strings.Split(m.raw, "\n") {
			k, v, _ := strings.Cut(line, "=")
			m.fields[k] = v
		}
		f.mu.Lock()
		if f.main == 0 {
			f.main = m.pid
		}
		if m.taken = m.pid == f.main; m.taken {
			if pid, err := strconv.Atoi(m.fields["MAINPID"]); err == nil && pid > 0 {
				f.main = pid
			}
		}
		f.msgs = append(f.msgs, m)
		close(f.cond)
		f.cond = make(chan struct{})
		f.mu.Unlock()
	}
}

// expect waits for the next message that carries READY, RELOADING,
// STOPPING or MAINPID (watchdog pings and plain STATUS updates may come
// between) and checks that it has every field in want ("KEY" or
// "KEY=VALUE").
func (f *fakeSystemd) expect(t *testing.T, timeout time.Duration, want ...string) notifyMsg {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		for f.next < len(f.msgs) {
			m := f.msgs[f.next]
			f.next++
			if !m.taken || !m.significant() {
				continue
			}
			f.mu.Unlock()
			for _, w := range want {
				k, v, hasV := strings.Cut(w, "=")
				got, ok := m.fields[k]
				if !ok || (hasV && got != v) {
					t.Fatalf("next notification %q lacks %s", m.raw, w)
				}
			}
			return m
		}
		c := f.cond
		f.mu.Unlock()
		select {
		case <-c:
		case <-deadline:
			t.Fatalf("no notification with %v within %s; got %v", want, timeout, f.all())
		}
	}
}

func (m notifyMsg) significant() bool {
	for _, k := range []string{"READY", "RELOADING", "STOPPING", "MAINPID"} {
		if _, ok := m.fields[k]; ok {
			return true
		}
	}
	return false
}

// snapshot returns every message so far.
func (f *fakeSystemd) snapshot() []notifyMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]notifyMsg(nil), f.msgs...)
}

func (f *fakeSystemd) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.msgs {
		taken := ""
		if !m.taken {
			taken = " (not main: refused)"
		}
		out = append(out, fmt.Sprintf("[pid %d] %q%s", m.pid, m.raw, taken))
	}
	return out
}

// pings counts WATCHDOG=1 from pid.
func (f *fakeSystemd) pings(pid int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.msgs {
		if m.fields["WATCHDOG"] == "1" && m.pid == pid {
			n++
		}
	}
	return n
}

func (f *fakeSystemd) waitPings(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for f.pings(pid) < n {
		if time.Now().After(deadline) {
			t.Fatalf("want %d WATCHDOG=1 from pid %d; got %v", n, pid, f.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A fake systemd sees the whole conversation: start, reload ok, reload
// rolled back, master upgrade (a new MAINPID), stop, and watchdog pings
// from whichever master is in charge. No worker ever speaks to it.
func TestSystemdNotifySequence(t *testing.T) {
	sd := newFakeSystemd(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "handoff")
	app := filepath.Join(dir, "app")
	install(t, bin.handoff, exe)
	install(t, bin.hello1, app)
	crash := script(t, dir, "crash", `echo "bad release" >&2; exit 1`)

	m := startMasterWith(t, exe, []string{"NOTIFY_SOCKET=" + sd.path, "WATCHDOG_USEC=300000"},
		[]string{"--workers", "2"}, app)
	pid := m.cmd.Process.Pid
	ready := sd.expect(t, 30*time.Second, "READY=1", "STATUS=gen 1 serving: 2/2 ready")
	if ready.pid != pid {
		t.Fatalf("READY=1 from pid %d, want the master %d", ready.pid, pid)
	}
	sd.waitPings(t, pid, 2)
	// Before READY=1, the master put its listening sockets in the fd
	// store, one descriptor per message, each under a name of its own:
	// both banks of the two slots of the steered listener.
	members := map[string]bool{}
	for _, m := range sd.snapshot() {
		if m.fields["FDSTORE"] != "1" {
			continue
		}
		n, ours, err := systemd.ParseStoreName(m.fields["FDNAME"])
		if !ours || err != nil || m.fds != 1 || m.pid != pid || m.fields["FDPOLL"] != "0" {
			t.Errorf("fd store message %q from pid %d with %d descriptors: %v", m.raw, m.pid, m.fds, err)
		}
		if n.Kind == systemd.KindMember {
			members[m.fields["FDNAME"]] = true
		}
	}
	if len(members) != 4 {
		t.Errorf("the master stored %d sockets of the steered listener (%v), want 4", len(members), members)
	}

	install(t, bin.hello2, app)
	m.cmd.Process.Signal(syscall.SIGHUP)
	r := sd.expect(t, 30*time.Second, "RELOADING=1", "MONOTONIC_USEC")
	if usec, err := strconv.ParseInt(r.fields["MONOTONIC_USEC"], 10, 64); err != nil || usec <= 0 {
		t.Fatalf("MONOTONIC_USEC=%q", r.fields["MONOTONIC_USEC"])
	}
	done := sd.expect(t, 30*time.Second, "READY=1")
	if !strings.HasPrefix(done.fields["STATUS"], "gen 2 serving: 2/2 ready; last reload ok in ") {
		t.Fatalf("STATUS after reload = %q", done.fields["STATUS"])
	}

	install(t, crash, app)
	m.cmd.Process.Signal(syscall.SIGHUP)
	sd.expect(t, 30*time.Second, "RELOADING=1")
	failed := sd.expect(t, 30*time.Second, "READY=1")
	if want := "gen 2 serving: 2/2 ready; reload to gen 3 failed: slot "; !strings.HasPrefix(failed.fields["STATUS"], want) ||
		!strings.Contains(failed.fields["STATUS"], "exited with status 1 before ready") {
		t.Fatalf("STATUS after a rolled back reload = %q", failed.fields["STATUS"])
	}

	// Upgrade the master itself: a new binary under the same path.
	install(t, bin.hello2, app)
	install(t, bin.handoff2, exe)
	m.cmd.Process.Signal(syscall.SIGHUP)
	sd.expect(t, 30*time.Second, "RELOADING=1")
	// The old master, still the main process, names the new one; the
	// new one then announces itself, ready.
	handed := sd.expect(t, 60*time.Second, "MAINPID")
	newPid, _ := strconv.Atoi(handed.fields["MAINPID"])
	if handed.pid != pid || newPid == pid || newPid <= 0 {
		t.Fatalf("MAINPID=%s sent by pid %d; want the old master %d to name its successor", handed.fields["MAINPID"], handed.pid, pid)
	}
	t.Cleanup(func() { stopPid(newPid) })
	main := sd.expect(t, 60*time.Second, "MAINPID", "READY=1")
	if main.pid != newPid || main.fields["MAINPID"] != strconv.Itoa(newPid) {
		t.Fatalf("READY=1 %q from pid %d, want MAINPID=%d READY=1 from the new master", main.raw, main.pid, newPid)
	}
	if !strings.HasPrefix(main.fields["STATUS"], "gen 4 serving: 2/2 ready") {
		t.Fatalf("new master's STATUS = %q", main.fields["STATUS"])
	}
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("old master exited %d", code)
	}
	sd.waitPings(t, newPid, 2)

	syscall.Kill(newPid, syscall.SIGTERM)
	stopping := sd.expect(t, 30*time.Second, "STOPPING=1", "EXTEND_TIMEOUT_USEC")
	if stopping.pid != newPid {
		t.Fatalf("STOPPING=1 from %d, want %d", stopping.pid, newPid)
	}
	waitGone(t, newPid)

	for _, line := range sd.all() {
		if !strings.HasPrefix(line, fmt.Sprintf("[pid %d]", pid)) && !strings.HasPrefix(line, fmt.Sprintf("[pid %d]", newPid)) {
			t.Fatalf("a process other than the masters notified systemd: %s", line)
		}
	}
	// The old master retired quietly: nothing from it after it named
	// its successor. And the new master never spoke out of turn: every
	// message was taken.
	after := false
	for _, line := range sd.all() {
		if strings.HasSuffix(line, "(not main: refused)") {
			t.Fatalf("a message systemd would refuse under NotifyAccess=main: %s", line)
		}
		if after && strings.HasPrefix(line, fmt.Sprintf("[pid %d]", pid)) {
			t.Fatalf("old master spoke after the hand-over: %s", line)
		}
		if strings.Contains(line, "MAINPID=") {
			after = true
		}
	}
}

// stopPid ends a master that the test did not start itself.
func stopPid(pid int) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	for i := 0; i < 400; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Sockets handed over by socket activation (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES) are adopted by name and served by the workers; the
// master binds nothing. A --listen name with no socket is an error.
func TestSystemdSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr := ln.Addr().String()
	// Another address in the flag: the activated socket must win.
	unused := freePort(t)

	activate := func(names string, flags ...string) *exec.Cmd {
		dir, _ := os.MkdirTemp("", "sa-")
		t.Cleanup(func() { os.RemoveAll(dir) })
		// LISTEN_PID must be the master's own pid: set it in a shell
		// that then execs handoff, keeping its pid.
		args := append([]string{"-c", `LISTEN_PID=$$ exec "$@"`, "sh", bin.handoff, "run", "--control", filepath.Join(dir, "c.sock")}, flags...)
		cmd := exec.Command("/bin/sh", args...)
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES="+names)
		cmd.ExtraFiles = []*os.File{f}
		return cmd
	}

	cmd := activate("http", "--listen", "http=tcp://"+unused, "--workers", "2", "--", bin.hello1)
	logs := startLogged(t, cmd)
	logs.waitLine(t, 30*time.Second, "generation serving")
	logs.waitLine(t, time.Second, "listening", "name=http", "from systemd socket activation", "addr="+addr)
	for i := 0; i < 20; i++ {
		body, err := get(addr, "/")
		if err != nil || field(body, "version") != "v1" {
			t.Fatalf("request through the activated socket: %q %v", body, err)
		}
	}
	if c, err := net.DialTimeout("tcp", unused, time.Second); err == nil {
		c.Close()
		t.Fatalf("master bound %s although systemd passed the socket", unused)
	}

	bad := activate("web", "--listen", "http=tcp://"+unused, "--", bin.hello1)
	out, err := bad.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `passed no socket named "http"`) {
		t.Fatalf("activation without a matching name: %v\n%s", err, out)
	}
}

// Under constant load, a new handoff binary and a reload: a new master
// pid serves, the old master is gone, no request fails.
func TestSystemdMasterUpgradeUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	exe := filepath.Join(dir, "handoff")
	install(t, bin.handoff, exe)
	m := startMasterWith(t, exe, nil, []string{"--workers", "2", "--log-level", "info"}, bin.hello1)
	before := m.waitServing(1, 2)
	m.handsOver = true
	l := startLoad(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	for i, next := range []string{bin.handoff2, bin.handoff} {
		install(t, next, exe)
		stdout, stderr, code := m.cli("reload", "--wait")
		if code != 0 {
			t.Fatalf("master upgrade %d: exit %d %s%s", i+1, code, stdout, stderr)
		}
		st := m.waitStatus(60*time.Second, "a new master serving", func(st workers.Status) bool {
			return st.PID != before.PID && st.Serving && len(st.Workers) == 2
		})
		t.Cleanup(func() { stopPid(st.PID) })
		if i == 0 {
			if code := m.waitExit(60 * time.Second); code != 0 {
				t.Fatalf("old master exited %d", code)
			}
		} else {
			waitGone(t, before.PID)
		}
		if st.Generation != before.Generation+1 {
			t.Fatalf("generation %d after upgrade from %d", st.Generation, before.Generation)
		}
		if !l.waitRequests(100, 20*time.Second) {
			t.Fatal("load stalled after the upgrade")
		}
		before = st
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed across master upgrades:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	t.Logf("%d requests over two master upgrades, none failed", l.total.Load())
}

// A new master that dies at start leaves the old one serving, and the old
// one says so in the log and in STATUS=; the reload still replaces the
// workers (a broken handoff binary on disk must not block every reload).
func TestSystemdFailedMasterUpgrade(t *testing.T) {
	sd := newFakeSystemd(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "handoff")
	install(t, bin.handoff, exe)
	m := startMasterWith(t, exe, []string{"NOTIFY_SOCKET=" + sd.path}, []string{"--workers", "2"}, bin.hello1)
	before := m.waitServing(1, 2)
	sd.expect(t, 30*time.Second, "READY=1")

	install(t, script(t, dir, "broken-handoff", `echo "broken handoff build" >&2; exit 1`), exe)
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload --wait with a broken handoff on disk: exit %d %s%s, want the workers reloaded", code, stdout, stderr)
	}
	sd.expect(t, 30*time.Second, "RELOADING=1")
	ready := sd.expect(t, 30*time.Second, "READY=1")
	if ready.pid != before.PID || !strings.Contains(ready.fields["STATUS"], "gen 1 serving: 2/2 ready; master upgrade failed") {
		t.Fatalf("after the failed upgrade: %q from pid %d", ready.raw, ready.pid)
	}
	m.log.waitLine(t, time.Second, "master upgrade failed, this master keeps serving")
	m.log.waitLine(t, time.Second, "the new handoff binary did not take over; reloading the workers")
	sd.expect(t, 30*time.Second, "RELOADING=1")
	sd.expect(t, 30*time.Second, "READY=1")
	st := m.waitServing(2, 2)
	if st.PID != before.PID {
		t.Fatalf("the old master changed: %+v", st)
	}
	if _, err := get(m.addr(), "/"); err != nil {
		t.Fatal(err)
	}

	// The next upgrade, to a good binary, goes through.
	m.handsOver = true
	install(t, bin.handoff2, exe)
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("upgrade after a failed one: exit %d %s%s", code, stdout, stderr)
	}
	sd.expect(t, 30*time.Second, "RELOADING=1")
	handed := sd.expect(t, 60*time.Second, "MAINPID")
	newPid, _ := strconv.Atoi(handed.fields["MAINPID"])
	t.Cleanup(func() { stopPid(newPid) })
	if handed.pid != before.PID || newPid == before.PID || newPid <= 0 {
		t.Fatalf("MAINPID=%d from pid %d, want the old master %d to name its successor", newPid, handed.pid, before.PID)
	}
	if main := sd.expect(t, 60*time.Second, "MAINPID", "READY=1"); main.pid != newPid {
		t.Fatalf("READY=1 from pid %d, want the new master %d", main.pid, newPid)
	}
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("old master exited %d", code)
	}
	// The failed master never started a generation: the new one is 3
	// (after the workers' reload to 2).
	if body, err := get(m.addr(), "/"); err != nil || field(body, "generation") != "3" {
		t.Fatalf("after the upgrade: %q %v", body, err)
	}
}
