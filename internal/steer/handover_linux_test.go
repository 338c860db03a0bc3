//go:build linux

package steer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// dupAll duplicates descriptors as a SCM_RIGHTS hand-over would.
func dupAll(t *testing.T, fds []int) []int {
	t.Helper()
	out := make([]int, len(fds))
	for i, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = d
	}
	return out
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// queueOf reads the accept queue of a listening socket directly.
func queueOf(t *testing.T, fd int) int {
	t.Helper()
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	return int(info.Unacked)
}

// TestHandover: a group re-created from duplicated descriptors (what a
// new master receives) keeps steering as the old one left it, and its
// choice can be changed; the program stays attached while only sockets
// of the group remain open.
func TestHandover(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		old := newTestGroup(t, "tcp://127.0.0.1:0", 3, ModeSteer, m)
		if err := old.Steer([]Target{{1, 1}, {2, 0}}); err != nil {
			t.Fatal(err)
		}
		st, fds := old.Export()
		want := 6
		if m == EBPF {
			want += ebpfFds
		}
		if len(fds) != want || st.Mechanism != m {
			t.Fatalf("exported %d descriptors with mechanism %s, want %d and %s", len(fds), st.Mechanism, want, m)
		}
		g, err := Import(st, dupAll(t, fds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		old.Close()
		if g.Mechanism() != m || g.Addr() != st.Addr || g.Slots() != 3 {
			t.Fatalf("imported %s on %s with %d slots", g.Mechanism(), g.Addr(), g.Slots())
		}
		got := connectAndCount(t, g, 20)
		if got[Target{1, 1}]+got[Target{2, 0}] != 20 || got[Target{1, 1}] == 0 || got[Target{2, 0}] == 0 {
			t.Errorf("after the hand-over: got %v, want all on slot 1 bank 1 and slot 2 bank 0", got)
		}
		if err := g.Steer([]Target{{0, 1}}); err != nil {
			t.Fatal(err)
		}
		if got := connectAndCount(t, g, 5); got[Target{0, 1}] != 5 {
			t.Errorf("new master steered to slot 0 bank 1: got %v", got)
		}

		// Keep only the sockets: the program (and for eBPF its maps)
		// stays with the group.
		var socks []int
		for _, tg := range targets(g) {
			socks = append(socks, g.Fd(tg.Bank, tg.Slot))
		}
		socks = dupAll(t, socks)
		defer closeFds(socks)
		g.Close()
		for i := 0; i < 4; i++ {
			dial(t, st.Addr, "")
		}
		target := index(Target{0, 1})
		waitFor(t, "4 connections on slot 0 bank 1", func() (bool, string) {
			var q []int
			sum := 0
			for _, fd := range socks {
				q = append(q, queueOf(t, fd))
				sum += q[len(q)-1]
			}
			if sum > q[target] {
				t.Fatalf("with the group closed, connections went elsewhere: %v", q)
			}
			return q[target] == 4, fmt.Sprint(q)
		})
	})
}

// TestHandoverRebuildsOtherLayout: a new master whose eBPF layout
// differs replaces program and maps, and steers on.
func TestHandoverRebuildsOtherLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("eBPF needs root")
	}
	old := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, EBPF)
	if err := old.Steer([]Target{{1, 0}}); err != nil {
		t.Fatal(err)
	}
	st, fds := old.Export()
	st.Layout = layoutVersion + 1
	g, err := Import(st, dupAll(t, fds))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Mechanism() != EBPF || g.Fallback() != nil {
		t.Fatalf("after rebuilding: %s (%v)", g.Mechanism(), g.Fallback())
	}
	if got := connectAndCount(t, g, 4); got[Target{1, 0}] != 4 {
		t.Errorf("rebuilt selector kept the choice? got %v", got)
	}
	if err := g.Steer([]Target{{0, 1}}); err != nil {
		t.Fatal(err)
	}
	if got := connectAndCount(t, g, 4); got[Target{0, 1}] != 4 {
		t.Errorf("rebuilt selector steered to slot 0 bank 1: got %v", got)
	}
}

// TestImportBadInput: a wrong descriptor count or a stranger socket is
// one error, and Import closes what it was given.
func TestImportBadInput(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		st, fds := g.Export()
		d := dupAll(t, fds)
		if _, err := Import(st, d[:3]); err == nil || !strings.Contains(err.Error(), "descriptors") {
			t.Errorf("3 descriptors: %v", err)
		}
		for _, fd := range d[:3] {
			if isOpen(fd) {
				t.Errorf("fd %d left open after a failed Import", fd)
			}
		}
		closeFds(d[3:])

		other := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		_, ofds := other.Export()
		d = dupAll(t, fds)
		d[2], _ = unix.FcntlInt(uintptr(ofds[2]), unix.F_DUPFD_CLOEXEC, 0)
		_, err := Import(st, d)
		if err == nil || !strings.Contains(err.Error(), "bound to") {
			t.Errorf("a socket of another group: %v", err)
		}
	})
}

// TestQueuedConnectionsWaitForReplacement: a worker holding slot 1's
// socket is killed with SIGKILL before accepting; its queue stays with
// the socket (the master holds it), and a replacement process given the
// same descriptor accepts every queued connection: none is refused.
func TestQueuedConnectionsWaitForReplacement(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		const n = 16
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{1, 0}}); err != nil {
			t.Fatal(err)
		}
		// worker starts the test binary in role with slot 1's socket
		// as fd 3, as the supervisor starts a worker.
		worker := func(role string, stdout bool) (*exec.Cmd, *bufio.Reader, io.Closer) {
			fd, err := unix.FcntlInt(uintptr(g.Fd(0, 1)), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "slot1")
			defer f.Close()
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), childEnv+"="+role, fmt.Sprintf("N=%d", n))
			cmd.ExtraFiles = []*os.File{f}
			cmd.Stderr = os.Stderr
			var (
				out *bufio.Reader
				in  io.WriteCloser
			)
			if stdout {
				o, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				out = bufio.NewReader(o)
				if in, err = cmd.StdinPipe(); err != nil {
					t.Fatal(err)
				}
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, out, in
		}
		hold, out, in := worker("hold", true)
		defer in.Close()
		if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("worker: %q, %v", line, err)
		}
		var conns []net.Conn
		for i := 0; i < n; i++ {
			conns = append(conns, dial(t, g.Addr(), ""))
		}
		waitQueued(t, g, n)
		if err := hold.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := hold.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("worker exit: %v", err)
		}
		if q, err := g.QueueLen(0, 1); err != nil || q != n {
			t.Fatalf("after the worker died: QueueLen %d, %v; want %d", q, err, n)
		}
		repl, _, _ := worker("accept", false)
		deadline := time.Now().Add(20 * time.Second)
		for i, c := range conns {
			c.SetReadDeadline(deadline)
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "hello\n" {
				t.Errorf("connection %d: %q, %v", i, b, err)
			}
		}
		if err := repl.Wait(); err != nil {
			t.Errorf("replacement: %v", err)
		}
	})
}

// TestUnprivilegedFallsBackToClassic: as nobody (no CAP_BPF, no
// CAP_NET_ADMIN) eBPF cannot be loaded; New with Auto falls back to
// classic BPF, says why, and steers.
func TestUnprivilegedFallsBackToClassic(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a child as nobody")
	}
	nobody, err := userIDs("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	// The test binary, where nobody may run it.
	dir, err := os.MkdirTemp("", "steer-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "steer.test")
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = []string{childEnv + "=unprivileged", "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody[0], Gid: nobody[1]}}
	out, err := cmd.CombinedOutput()
	t.Logf("child as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	s := string(out)
	if !strings.Contains(s, "mechanism cbpf\n") || !strings.Contains(s, "landed 5\n") {
		t.Errorf("want classic BPF steering all 5 connections")
	}
	if !strings.Contains(s, "fallback ") || strings.Contains(s, "fallback <nil>") {
		t.Errorf("want the reason eBPF was not used")
	}
}

func userIDs(name string) ([2]uint32, error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return [2]uint32{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == name {
			var uid, gid uint32
			if _, err := fmt.Sscan(f[2]+" "+f[3], &uid, &gid); err != nil {
				return [2]uint32{}, err
			}
			return [2]uint32{uid, gid}, nil
		}
	}
	return [2]uint32{}, errors.New("not in /etc/passwd")
}

// activated makes a listening socket as systemd would for a .socket
// unit, with or without ReusePort=yes.
func activated(t *testing.T, reusePort bool) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestJoin: a group built around an activated socket with SO_REUSEPORT
// has it as bank 0 of slot 0 and steers to every member; one without
// SO_REUSEPORT is ErrUnsupported and stays usable as a shared socket.
// A socket left alone in a group by a previous instance (its program
// still attached, as after a restart under systemd) is joined too.
func TestJoin(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		fd := activated(t, true)
		keep, _ := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		spec := upgrade.Spec{Name: "http"}
		g, err := Join(spec, fd, Options{Slots: 2, Mechanism: m})
		if err != nil {
			t.Fatal(err)
		}
		if g.Fd(0, 0) != fd || g.Spec().Network != "tcp" {
			t.Fatalf("slot 0 bank 0 is fd %d (want %d), network %q", g.Fd(0, 0), fd, g.Spec().Network)
		}
		for _, tg := range targets(g) {
			if err := g.Steer([]Target{tg}); err != nil {
				t.Fatal(err)
			}
			if got := connectAndCount(t, g, 2); got[tg] != 2 {
				t.Errorf("joined group steered to %v: got %v", tg, got)
			}
		}
		g.Close()

		// As after a restart: the activated socket survived (systemd
		// holds it), the old members and selector fds are gone.
		g, err = Join(spec, keep, Options{Slots: 2, Mechanism: m})
		if err != nil {
			unix.Close(keep)
			t.Fatalf("joining a socket a previous group left behind: %v", err)
		}
		if err := g.Steer([]Target{{1, 1}}); err != nil {
			t.Fatal(err)
		}
		if got := connectAndCount(t, g, 3); got[Target{1, 1}] != 3 {
			t.Errorf("rejoined group steered to slot 1 bank 1: got %v", got)
		}
		g.Close()

		plain := activated(t, false)
		defer unix.Close(plain)
		_, err = Join(spec, plain, Options{Slots: 2, Mechanism: m})
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("socket without SO_REUSEPORT: %v, want ErrUnsupported", err)
		}
		t.Logf("without SO_REUSEPORT: %v", err)
		if l, err := unix.GetsockoptInt(plain, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l != 1 {
			t.Fatalf("the caller's socket is no longer listening: %d, %v", l, err)
		}
	})
}
