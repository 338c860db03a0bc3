//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runBounded runs handoff with args and returns its stderr and exit
// status. A handoff that is still running after timeout (one that
// should have refused to start) is stopped with SIGTERM, as an operator
// would, and the test fails.
func runBounded(t *testing.T, timeout time.Duration, args ...string) (stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var e bytes.Buffer
	cmd := exec.CommandContext(ctx, bin.handoff, args...)
	cmd.Stderr = &e
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 40 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("handoff %v was still running after %s; it should have refused to start; stderr:\n%s", args, timeout, e.String())
		return e.String(), -1
	}
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("handoff %v: %v", args, err)
	}
	return e.String(), code
}

// A second handoff on a port a first one serves refuses to start, with
// one line naming the address and the first master, and the first loses
// no request: the second never joined its SO_REUSEPORT group.
func TestPortsSecondHandoffRefused(t *testing.T) {
	a := startMaster(t, []string{"--workers", "2"}, bin.testapp)
	a.waitServing(1, 2)
	addr := a.addr()
	l := startStrictNew(addr, 4)
	defer l.stop()
	if !l.waitRequests(100, 30*time.Second) {
		t.Fatal("load is not getting answers")
	}
	ctlB := filepath.Join(t.TempDir(), "b.sock")
	stderr, code := runBounded(t, 30*time.Second, "run", "--control", ctlB, "--workers", "2",
		"--listen", "http=tcp://"+addr, "--", bin.testapp)
	want := fmt.Sprintf("address %s is already in use by pid %d (handoff)", addr, a.cmd.Process.Pid)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("second handoff: exit %d, stderr %q; want exit 1 and one line containing %q", code, stderr, want)
	}
	if _, err := os.Lstat(ctlB); err == nil {
		t.Errorf("the second handoff left its control socket %s behind", ctlB)
	}
	// The first one serves on alone: nothing queues on a socket nobody
	// reads, so every request after the attempt is answered too.
	if !l.waitRequests(300, 30*time.Second) {
		t.Fatal("load stalled after the second handoff tried the port")
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Errorf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	if n := a.log.count("foreign sockets"); n != 0 {
		t.Errorf("the first master logged %d lines about foreign sockets, want none", n)
	}
}

// The same address given to two listeners is a usage error naming both,
// and nothing starts.
func TestPortsSameAddressTwice(t *testing.T) {
	addr := freePort(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	stderr, code := runBounded(t, 30*time.Second, "run", "--control", ctl,
		"--listen", "a=tcp://"+addr, "--listen", "b=tcp://"+addr, "--", bin.testapp)
	want := fmt.Sprintf(`--listen "b=tcp://%s": address %s is also listener "a"'s`, addr, addr)
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q; want exit 2 and one line containing %q", code, stderr, want)
	}
}

// A socket of another process that joins a serving group later (same
// user, SO_REUSEPORT, the same address) is seen and logged.
func TestPortsForeignSocketLogged(t *testing.T) {
	a := startMaster(t, []string{"--workers", "2"}, bin.testapp)
	a.waitServing(1, 2)
	host, port, _ := net.SplitHostPort(a.addr())
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	open := true
	defer func() {
		if open {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	sa := &unix.SockaddrInet4{}
	copy(sa.Addr[:], net.ParseIP(host).To4())
	sa.Port, _ = strconv.Atoi(port)
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("bind %s:%s with SO_REUSEPORT: %v", host, port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	a.log.waitLine(t, 60*time.Second, "foreign sockets on a steered listener's address", "foreign=1")
	unix.Close(fd)
	open = false
	a.log.waitLine(t, 60*time.Second, "no foreign socket on the listener's address any more")
}

// A unix listener's socket appears with the mode and owner it asks for,
// at its path (status says so too), and nothing else is left in its
// directory; in a directory every user may write without the sticky bit
// handoff refuses to start, with one line.
func TestUnixListenerModeAndOwner(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	url := "api=unix://" + path + "?mode=0660"
	if os.Geteuid() == 0 {
		url += "&owner=nobody"
	}
	m := startMaster(t, []string{"--workers", "1", "--listen", "http=tcp://127.0.0.1:0", "--listen", url}, bin.testapp)
	st := m.waitServing(1, 1)
	if len(st.Listeners) != 2 || st.Listeners[1].Addr != path {
		t.Errorf("listeners %+v, want the second at %s", st.Listeners, path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != os.ModeSocket|0o660 {
		t.Errorf("mode %v, want %v", fi.Mode(), os.ModeSocket|0o660)
	}
	if os.Geteuid() == 0 {
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
			t.Errorf("owner uid %d, want nobody (65534)", uid)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("%s holds %v, want only api.sock", dir, es)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c.Close()

	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	stderr, code := runBounded(t, 30*time.Second, "run", "--control", filepath.Join(t.TempDir(), "c.sock"),
		"--listen", "api=unix://"+filepath.Join(open, "api.sock"), "--", bin.testapp)
	want := "directory " + open + " is writable by every user and has no sticky bit"
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q; want exit 1 and one line containing %q", code, stderr, want)
	}
	if es, _ := os.ReadDir(open); len(es) != 0 {
		t.Errorf("%s holds %v after the refusal", open, es)
	}
}
