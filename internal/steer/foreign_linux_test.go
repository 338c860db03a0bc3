//go:build linux

package steer

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// reusePortSocket binds a socket with SO_REUSEPORT to addr ("IP:PORT")
// as another program would (listening, for TCP): one that may join a
// group of ours. It fails with EADDRINUSE where a socket without
// SO_REUSEPORT has the port (another test's connection, say).
func reusePortSocket(t *testing.T, sotype int, addr string) (int, error) {
	t.Helper()
	ap, err := netipAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, ap); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", addr, err)
	}
	if sotype == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 16); err != nil {
			t.Fatal(err)
		}
	}
	return fd, nil
}

// retryPort runs try with ports until one is not taken by a socket
// without SO_REUSEPORT (the machine is shared: another test's outgoing
// connection may hold any ephemeral port).
func retryPort(t *testing.T, try func() error) {
	t.Helper()
	var err error
	for range 50 {
		if err = try(); !errors.Is(err, unix.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func netipAddr(addr string) (*unix.SockaddrInet4, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{}
	copy(sa.Addr[:], net.ParseIP(host).To4())
	_, err = fmt.Sscan(port, &sa.Port)
	return sa, err
}

func newSpecGroup(network, addr string) (*Group, error) {
	spec, err := upgrade.ParseSpec("t=" + network + "://" + addr)
	if err != nil {
		return nil, err
	}
	return New(spec, Options{Slots: 2, Mechanism: CBPF})
}

// New refuses an address where any other socket is, even one with
// SO_REUSEPORT of the same user whose group the kernel would let it
// join, or a wildcard on the same port; the error names the address.
func TestNewRefusesAddressInUse(t *testing.T) {
	for _, c := range []struct {
		name    string
		sotype  int
		network string
		theirs  string // where the other socket is; port from a free one
		ours    string
	}{
		{"tcp same address", unix.SOCK_STREAM, "tcp", "127.0.0.1", "127.0.0.1"},
		{"tcp their wildcard", unix.SOCK_STREAM, "tcp", "0.0.0.0", "127.0.0.1"},
		{"tcp our wildcard", unix.SOCK_STREAM, "tcp4", "127.0.0.1", "0.0.0.0"},
		{"udp same address", unix.SOCK_DGRAM, "udp", "127.0.0.1", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var port string
			retryPort(t, func() error {
				port = freePort(t, c.sotype)
				fd, err := reusePortSocket(t, c.sotype, net.JoinHostPort(c.theirs, port))
				if err == nil {
					t.Cleanup(func() { unix.Close(fd) })
				}
				return err
			})
			addr := net.JoinHostPort(c.ours, port)
			g, err := newSpecGroup(c.network, addr)
			if err == nil {
				g.Close()
				t.Fatalf("New on %s succeeded while another socket is on %s:%s", addr, c.theirs, port)
			}
			if !errors.Is(err, upgrade.ErrAddressInUse) || !strings.Contains(err.Error(), "address "+addr+" is already in use") {
				t.Fatalf("error %q, want one wrapping ErrAddressInUse naming %s", err, addr)
			}
			// The other socket got nothing of ours: it is still alone.
			if n := membersOn(t, c.sotype, addr); n != 1 {
				t.Errorf("%d sockets on %s after the refusal, want 1", n, addr)
			}
		})
	}
}

// The error names the process that holds the address.
func TestNewNamesTheHolder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=hold")
	cmd.ExtraFiles = []*os.File{f}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("child said %q", line)
	}
	addr := ln.Addr().String()
	_, err = newSpecGroup("tcp", addr)
	want := fmt.Sprintf("address %s is already in use by pid %d (", addr, cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want it to contain %q", err, want)
	}
}

// Foreign counts the sockets on the group's address that are not its
// own: none for a fresh group or copies of its descriptors, one for a
// socket of another program that joined its SO_REUSEPORT group, or that
// listens on the wildcard of the same port, and none once it is gone.
func TestForeign(t *testing.T) {
	for _, c := range []struct {
		name    string
		sotype  int
		network string
		theirs  string
	}{
		{"tcp joins the group", unix.SOCK_STREAM, "tcp", "127.0.0.1"},
		{"tcp on the wildcard", unix.SOCK_STREAM, "tcp", "0.0.0.0"},
		{"udp joins the group", unix.SOCK_DGRAM, "udp", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var (
				g  *Group
				fd int
			)
			retryPort(t, func() error {
				var err error
				if g, err = newSpecGroup(c.network, "127.0.0.1:0"); err != nil {
					return err
				}
				// Where the other socket will be: the port must take it.
				_, port, _ := net.SplitHostPort(g.Addr())
				if fd, err = reusePortSocket(t, c.sotype, net.JoinHostPort(c.theirs, port)); err != nil {
					g.Close()
					return err
				}
				unix.Close(fd)
				return nil
			})
			defer g.Close()
			foreign := func() int {
				t.Helper()
				n, err := g.Foreign()
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := foreign(); n != 0 {
				t.Fatalf("Foreign() = %d for a fresh group, want 0", n)
			}
			dup, err := unix.Dup(g.Fd(0, 0)) // a worker's copy
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dup)
			if n := foreign(); n != 0 {
				t.Fatalf("Foreign() = %d with a copy of a member open, want 0", n)
			}
			_, port, _ := net.SplitHostPort(g.Addr())
			fd, err = reusePortSocket(t, c.sotype, net.JoinHostPort(c.theirs, port))
			if err != nil {
				t.Fatal(err)
			}
			if n := foreign(); n != 1 {
				t.Fatalf("Foreign() = %d with another program's socket on %s:%s, want 1", n, c.theirs, port)
			}
			unix.Close(fd)
			if n := foreign(); n != 0 {
				t.Fatalf("Foreign() = %d once it closed, want 0", n)
			}
		})
	}
}

// freePort is a port nothing uses for sotype on 127.0.0.1 and 0.0.0.0
// right now.
func freePort(t *testing.T, sotype int) string {
	t.Helper()
	network := "tcp4"
	if sotype == unix.SOCK_DGRAM {
		network = "udp4"
	}
	var addr string
	if network == "tcp4" {
		ln, err := net.Listen(network, "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	} else {
		pc, err := net.ListenPacket(network, "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
	}
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// membersOn counts the sockets on addr in /proc/net.
func membersOn(t *testing.T, sotype int, addr string) int {
	t.Helper()
	sa, err := netipAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	inodes, err := upgrade.Overlapping(sotype, 0, sa)
	if err != nil {
		t.Fatal(err)
	}
	return len(inodes)
}
