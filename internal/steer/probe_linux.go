//go:build linux

package steer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxProbes bounds the Dials in flight per group: the eBPF probe map has
// this many entries, and the classic program keeps room for as many.
const maxProbes = 64

// probeRoute is where a group's probes connect: from the listener's
// address (loopback for a wildcard) with a port the kernel picks, to the
// listener's address and port.
type probeRoute struct {
	family int
	wire   []byte // the address as the programs read it: 4 or 16 bytes
	port   int    // the group's
	zone   uint32 // IPv6 scope
}

// sockaddr returns the route's address with port. Each call returns a
// new one: a unix.Sockaddr is written to when used in a system call, so
// concurrent Dials must not share one.
func (r *probeRoute) sockaddr(port int) unix.Sockaddr {
	if r.family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: [4]byte(r.wire), Port: port}
	}
	return &unix.SockaddrInet6{Addr: [16]byte(r.wire), Port: port, ZoneId: r.zone}
}

// Dial opens a TCP connection from this process that the kernel
// delivers to the socket of bank and slot, whether Steer made it active
// or not: a readiness probe of the worker accepting on that socket.
// Nothing else changes: other connections are steered as before, and
// the group keeps its members and indices.
//
// The connection comes from the listener's address (127.0.0.1 or ::1 for
// a wildcard; 127.0.0.1 for a dual-stack wildcard on a host without
// ::1) and a source port the kernel assigns when Dial binds its socket.
// While the handshake runs, that source address and port are registered
// in the selector, which sends their SYN to the target before any other
// choice; once connect returns (or fails) the entry is gone. A nil error
// means the handshake completed onto the target socket's accept queue,
// not that a worker accepted it: the kernel completes handshakes for a
// listener by itself. ctx bounds the handshake: a target whose queue is
// full drops the SYN, and Dial waits until ctx is done; a socket that
// is no longer listening (a worker shut it down) is an error. At most
// 64 Dials per group may be in flight; a UDP group has none (probes
// are TCP). The caller closes the connection.
func (g *Group) Dial(ctx context.Context, bank, slot int) (net.Conn, error) {
	c, err := g.dial(ctx, bank, slot)
	if err != nil {
		return nil, fmt.Errorf("steer %s: probe bank %d slot %d: %w", g.spec, bank, slot, err)
	}
	return c, nil
}

func (g *Group) dial(ctx context.Context, bank, slot int) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	r, idx, err := g.probeTarget(bank, slot)
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(r.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	// The socket holds its source port from bind to close: no other
	// socket can connect from the same address and port meanwhile.
	f := os.NewFile(uintptr(fd), "probe")
	defer f.Close()
	if err := unix.Bind(fd, r.sockaddr(0)); err != nil {
		return nil, fmt.Errorf("bind %s: %w", net.IP(r.wire), err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	port := uint16(sockaddrPort(sa))
	if err := g.addProbe(port, idx, r.wire); err != nil {
		return nil, err
	}
	cerr := connect(ctx, f, fd, r.sockaddr(r.port))
	// Still bound: unregister before the port is free again. A SYN the
	// socket retransmits after this goes wherever normal traffic goes,
	// but the socket answers the SYN-ACK with a reset once closed, so
	// no connection is made there.
	rerr := g.removeProbe(port)
	if cerr != nil {
		return nil, cerr
	}
	if rerr != nil {
		return nil, rerr
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("wrap connection: %w", err)
	}
	return c, nil
}

// connect connects the non-blocking socket fd, owned by f, to sa and
// waits until the handshake completed, failed, or ctx is done.
func connect(ctx context.Context, f *os.File, fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect %s: %w", sockaddrString(sa), err)
	}
	// Once ctx is done (so ctx.Err says why), a deadline in the past
	// ends the wait.
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("connect %s: %w", sockaddrString(sa), err)
	}
	var cerr error
	err = rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = fmt.Errorf("getsockopt SO_ERROR: %w", err)
			return true
		case v != 0:
			cerr = syscall.Errno(v)
			return true
		}
		// No error yet: connected, or still in progress.
		_, err = unix.Getpeername(int(fd))
		return err == nil
	})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("connect %s: %w", sockaddrString(sa), err)
	}
	if cerr != nil {
		return fmt.Errorf("connect %s: %w", sockaddrString(sa), cerr)
	}
	return nil
}

// probeTarget checks a Dial's target and returns the route and the
// target's index. The route is worked out on the first Dial.
func (g *Group) probeTarget(bank, slot int) (*probeRoute, int, error) {
	switch {
	case g.closed:
		return nil, 0, errors.New("group closed")
	case g.sotype != unix.SOCK_STREAM:
		return nil, 0, errors.New("a UDP group has no probe connections (probes are TCP)")
	case bank < 0 || bank >= Banks:
		return nil, 0, fmt.Errorf("bank %d (want 0 or 1)", bank)
	case slot < 0 || slot >= g.slots:
		return nil, 0, fmt.Errorf("slot %d out of range (the group has %d slots)", slot, g.slots)
	}
	// A socket a worker shut down left the group: with classic BPF its
	// index now names another socket, or none (then the kernel hashes
	// over the group).
	info, err := unix.GetsockoptTCPInfo(g.fd(bank, slot), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, 0, fmt.Errorf("getsockopt TCP_INFO: %w", err)
	}
	if info.State != tcpListen {
		return nil, 0, errors.New("the socket is no longer listening (shut down by a worker?)")
	}
	if g.route == nil {
		r, err := newProbeRoute(g.sa, g.v6only)
		if err != nil {
			return nil, 0, err
		}
		g.route = r
	}
	return g.route, index(Target{Slot: slot, Bank: bank}), nil
}

// newProbeRoute works out where probes of a group bound to sa connect
// from and to.
func newProbeRoute(sa unix.Sockaddr, v6only int) (*probeRoute, error) {
	v4 := func(addr [4]byte, port int) *probeRoute {
		return &probeRoute{family: unix.AF_INET, wire: addr[:], port: port}
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		addr := a.Addr
		if addr == ([4]byte{}) {
			addr = [4]byte{127, 0, 0, 1}
		}
		return v4(addr, a.Port), nil
	case *unix.SockaddrInet6:
		ip := net.IP(a.Addr[:])
		if v := ip.To4(); v != nil && !ip.IsUnspecified() {
			// An IPv4-mapped address: the SYN is IPv4.
			return v4([4]byte(v), a.Port), nil
		}
		addr := a.Addr
		if ip.IsUnspecified() {
			addr = [16]byte{15: 1}
			if v6only == 0 && !canBind6(addr) {
				return v4([4]byte{127, 0, 0, 1}, a.Port), nil
			}
		}
		return &probeRoute{family: unix.AF_INET6, wire: addr[:], port: a.Port, zone: a.ZoneId}, nil
	}
	return nil, fmt.Errorf("no probe route to %s", sockaddrString(sa))
}

// canBind6 reports whether a TCP socket can bind to addr (is ::1 there?).
func canBind6(addr [16]byte) bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet6{Addr: addr}) == nil
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// addProbe registers a probe from the group's probe address and port
// for the socket at idx: one map update with eBPF, a program with a
// probe prefix with classic BPF.
func (g *Group) addProbe(port uint16, idx int, wire []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return errors.New("group closed")
	case len(g.probes) >= maxProbes:
		return fmt.Errorf("%d probes already in flight (the limit is %d)", len(g.probes), maxProbes)
	}
	if _, ok := g.probes[port]; ok {
		// The kernel gave the port to this socket: whoever had it
		// closed its socket, and unregisters before that.
		return fmt.Errorf("source port %d is registered already", port)
	}
	if g.probes == nil {
		g.probes = map[uint16]int{}
	}
	g.probes[port] = idx
	var err error
	if g.ebpf != nil {
		err = g.ebpf.setProbe(port, idx, wire)
	} else {
		err = g.attachWithProbes()
	}
	if err != nil {
		delete(g.probes, port)
		if g.ebpf == nil {
			_ = g.attachWithProbes()
		}
		return err
	}
	return nil
}

// removeProbe unregisters the probe with source port port.
func (g *Group) removeProbe(port uint16) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.probes[port]; !ok {
		return nil
	}
	delete(g.probes, port)
	if g.closed {
		return nil
	}
	if g.ebpf != nil {
		return g.ebpf.deleteProbe(port)
	}
	return g.attachWithProbes()
}

// attachWithProbes attaches the classic program of the current choice
// with the prefix for the probes in flight.
func (g *Group) attachWithProbes() error {
	return attachClassic(g.fds[0], g.withProbes(g.cbase))
}

// withProbes returns the classic program p behind the prefix for the
// probes in flight.
func (g *Group) withProbes(p []unix.SockFilter) []unix.SockFilter {
	if len(g.probes) == 0 {
		return p
	}
	return append(probePrefix(g.route.wire, g.probes), p...)
}
