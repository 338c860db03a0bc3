//go:build linux

package steer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// TestDetachReorders shows why a group never closes a member: when one
// leaves the group (close, or shutdown by any process sharing it), the
// kernel moves the last member into its place (reuseport_detach_sock),
// so a classic program's index now names another socket. QueueLen
// reports a member that left.
func TestDetachReorders(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, CBPF)
			// Group order: s0/b0, s0/b1, s1/b0, s1/b1. Steer to s0/b1.
			if err := g.Steer([]Target{{0, 1}}); err != nil {
				t.Fatal(err)
			}
			g.mu.Lock()
			fd := g.fds[index(Target{0, 1})]
			if how == "close" {
				unix.Close(fd)
				g.fds[index(Target{0, 1})] = -1
			} else if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
				g.mu.Unlock()
				t.Fatal(err)
			}
			g.mu.Unlock()
			if how == "shutdown" {
				if _, err := g.QueueLen(1, 0); err == nil || !strings.Contains(err.Error(), "no longer listening") {
					t.Errorf("QueueLen of a shut down member: %v", err)
				}
			}
			// Index 1 now holds the former last member, s1/b1.
			addr := g.Addr()
			for i := 0; i < 3; i++ {
				dial(t, addr, "")
			}
			waitFor(t, "3 connections on slot 1 bank 1", func() (bool, string) {
				n, err := g.QueueLen(1, 1)
				if err != nil {
					t.Fatal(err)
				}
				return n == 3, fmt.Sprintf("%d queued there", n)
			})
		})
	}
}

// TestBadInput: each mistake is one precise error and leaves no
// descriptor behind.
func TestBadInput(t *testing.T) {
	before := openFds(t)
	spec := func(s string) upgrade.Spec {
		sp, err := upgrade.ParseSpec("t=" + s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	busy, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(busy, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(busy, 1); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(busy)
	busyAddr := sockaddrString(sa)
	cases := []struct {
		spec        upgrade.Spec
		opts        Options
		want        string
		unsupported bool
	}{
		{spec("unix:///tmp/x.sock"), Options{Slots: 2}, "unix sockets have no SO_REUSEPORT groups", true},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 0}, "0 slots (want 1 to 1024)", false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: MaxSlots + 1}, "1025 slots", false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 1, Mode: "fastest"}, `unknown steering mode "fastest"`, false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 1, Mechanism: "xdp"}, `unknown mechanism "xdp"`, false},
		{spec("tcp://" + busyAddr), Options{Slots: 2}, "address " + busyAddr + " is already in use", false},
		{spec("tcp4://no-such-host.invalid:80"), Options{Slots: 1}, `resolve "no-such-host.invalid"`, false},
	}
	for _, c := range cases {
		g, err := New(c.spec, c.opts)
		if err == nil {
			g.Close()
			t.Errorf("%s %+v: no error", c.spec, c.opts)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %+v: %q, want one line with %q", c.spec, c.opts, err, c.want)
		}
		if errors.Is(err, ErrUnsupported) != c.unsupported {
			t.Errorf("%s: ErrUnsupported is %v, want %v", c.spec, errors.Is(err, ErrUnsupported), c.unsupported)
		}
	}
	unix.Close(busy)

	g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, CBPF)
	for _, c := range []struct {
		active []Target
		want   string
	}{
		{[]Target{{2, 0}}, "slot 2 out of range (the group has 2 slots)"},
		{[]Target{{-1, 0}}, "slot -1 out of range"},
		{[]Target{{0, 2}}, "slot 0: bank 2 (want 0 or 1)"},
		{[]Target{{1, 0}, {1, 1}}, "slot 1 named twice"},
	} {
		if err := g.Steer(c.active); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Steer(%v): %v, want %q", c.active, err, c.want)
		}
	}
	if g.Fd(2, 0) != -1 || g.Fd(0, 2) != -1 || g.Fd(-1, 0) != -1 {
		t.Error("Fd out of range is not -1")
	}
	g.Close()
	if err := g.Steer(bank(2, 0)); err == nil {
		t.Error("Steer after Close: no error")
	}
	if g.Fd(0, 0) != -1 {
		t.Error("Fd after Close is not -1")
	}
	if after := openFds(t); after != before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
}

// TestCloseLeavesNothing: a group of every kind closes all its
// descriptors (sockets, program, maps).
func TestCloseLeavesNothing(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		before := openFds(t)
		for _, l := range []string{"tcp://127.0.0.1:0", "udp://127.0.0.1:0"} {
			for _, mode := range []Mode{ModeSteer, ModeSticky} {
				sp, _ := upgrade.ParseSpec("t=" + l)
				g, err := New(sp, Options{Slots: 3, Mode: mode, Mechanism: m})
				if err != nil {
					t.Fatal(err)
				}
				if err := g.Grow(5); err != nil {
					t.Fatal(err)
				}
				g.Close()
				g.Close()
			}
		}
		if after := openFds(t); after != before {
			t.Errorf("%d descriptors open before, %d after", before, after)
		}
	})
}

func openFds(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && !strings.HasPrefix(l, "/proc") {
			n++
		}
	}
	return n
}
