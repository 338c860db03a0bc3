//go:build linux

package steer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listeners returns the listen addresses Dial is tested on: a specific
// IPv4 address and an IPv4 wildcard, and with IPv6 a specific IPv6
// address and a dual-stack wildcard (probed from ::1).
func listeners(t *testing.T) []string {
	ls := []string{"tcp://127.0.0.1:0", "tcp4://:0"}
	if hasIPv6(t) {
		ls = append(ls, "tcp6://[::1]:0", "tcp://:0")
	}
	return ls
}

func dialCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// probe Dials a target and fails the test on error; the connection is
// closed when the test ends.
func probe(t *testing.T, g *Group, tg Target) net.Conn {
	t.Helper()
	c, err := g.Dial(dialCtx(t), tg.Bank, tg.Slot)
	if err != nil {
		t.Fatalf("Dial %v: %v", tg, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// addrKey is "ip:port" of a peer or local address, IPv4-mapped
// addresses as IPv4.
func addrKey(sa unix.Sockaddr) string {
	return net.JoinHostPort(peerIP(sa), fmt.Sprint(sockaddrPort(sa)))
}

func connKey(a net.Addr) string {
	ta := a.(*net.TCPAddr)
	ip := ta.IP
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))
}

// acceptPeers accepts what waits on every socket of g and returns, per
// socket, the peers (ip:port).
func acceptPeers(t *testing.T, g *Group) map[Target][]string {
	t.Helper()
	got := map[Target][]string{}
	for _, tg := range targets(g) {
		for _, sa := range acceptReadyAddrs(t, g.Fd(tg.Bank, tg.Slot)) {
			got[tg] = append(got[tg], addrKey(sa))
		}
	}
	return got
}

// probesLeft returns the probe entries the group's selector still has:
// the group's own record, and for eBPF the probe map itself.
func probesLeft(t *testing.T, g *Group) string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var left []string
	if len(g.probes) > 0 {
		left = append(left, fmt.Sprintf("registered %v", g.probes))
	}
	if g.ebpf != nil {
		ports, err := g.ebpf.probePorts()
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) > 0 {
			left = append(left, fmt.Sprintf("probe map %v", ports))
		}
	}
	return strings.Join(left, ", ")
}

// TestDialReachesInactive: Dial reaches each socket of the group, active
// or not, in both modes, on specific and wildcard addresses of both
// families; the connection is queued there and nowhere else, its peer
// is the Dial's local address, and no probe entry is left.
func TestDialReachesInactive(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		for _, l := range listeners(t) {
			for _, mode := range []Mode{ModeSteer, ModeSticky} {
				g := newTestGroup(t, l, 3, mode, m)
				if err := g.Steer([]Target{{0, 0}, {1, 0}}); err != nil {
					t.Fatal(err)
				}
				for _, tg := range targets(g) {
					c := probe(t, g, tg)
					q := waitQueued(t, g, 1)
					if q[tg] != 1 {
						t.Errorf("%s %s: Dial %v queued on %v", l, mode, tg, q)
					}
					peers := acceptReadyAddrs(t, g.Fd(tg.Bank, tg.Slot))
					if len(peers) != 1 || addrKey(peers[0]) != connKey(c.LocalAddr()) {
						t.Errorf("%s %s: %v accepted %v, the probe came from %v", l, mode, tg, peers, c.LocalAddr())
					}
					c.Close()
					if left := probesLeft(t, g); left != "" {
						t.Errorf("%s %s: after Dial %v: %s", l, mode, tg, left)
					}
				}
				g.Close()
			}
		}
	})
}

// TestDialConcurrent: concurrent Dials to every socket (several to
// each) each reach their own target.
func TestDialConcurrent(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		for _, l := range []string{"tcp://127.0.0.1:0", "tcp://:0"} {
			g := newTestGroup(t, l, 4, ModeSteer, m)
			if err := g.Steer([]Target{{0, 0}}); err != nil {
				t.Fatal(err)
			}
			const each = 6 // 8 targets × 6 = 48 Dials, within maxProbes
			var (
				mu   sync.Mutex
				want = map[Target][]string{}
				wg   sync.WaitGroup
				errs = make(chan error, each*len(targets(g)))
			)
			for _, tg := range targets(g) {
				for range each {
					wg.Go(func() {
						c, err := g.Dial(dialCtx(t), tg.Bank, tg.Slot)
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						want[tg] = append(want[tg], connKey(c.LocalAddr()))
						mu.Unlock()
						c.Close()
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			waitQueued(t, g, each*len(targets(g)))
			got := acceptPeers(t, g)
			for _, tg := range targets(g) {
				slices.Sort(want[tg])
				slices.Sort(got[tg])
				if !slices.Equal(got[tg], want[tg]) {
					t.Errorf("%s: %v accepted %v, Dials to it came from %v", l, tg, got[tg], want[tg])
				}
			}
			if left := probesLeft(t, g); left != "" {
				t.Errorf("%s: after the Dials: %s", l, left)
			}
		}
	})
}

// TestDialLeavesOthersAlone: while Dials to inactive sockets run in a
// loop, normal clients (from the probes' own address among others) are
// steered exactly as without them: eBPF round robin stays exact (probes
// take no turn), classic BPF puts each where its flow hash says, and no
// normal connection reaches an inactive socket.
func TestDialLeavesOthersAlone(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, m)
		active := []Target{{0, 0}, {1, 0}, {2, 1}}
		if err := g.Steer(active); err != nil {
			t.Fatal(err)
		}
		inactive := []Target{{0, 1}, {1, 1}, {2, 0}, {3, 0}, {3, 1}}
		var (
			mu     sync.Mutex
			probes = map[string]Target{}
			stop   = make(chan struct{})
			done   = make(chan error, 1)
		)
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tg := inactive[i%len(inactive)]
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := g.Dial(ctx, tg.Bank, tg.Slot)
				cancel()
				if err != nil {
					done <- err
					return
				}
				mu.Lock()
				probes[connKey(c.LocalAddr())] = tg
				mu.Unlock()
				c.Close()
			}
		}()
		nprobes := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(probes)
		}
		waitFor(t, "the first Dial", func() (bool, string) { return nprobes() > 0, "none yet" })
		const n = 120
		from := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
		normal := map[string]bool{}
		var clients []unix.Sockaddr
		addr := g.Addr()
		for i := 0; i < n; i++ {
			c := dial(t, addr, from[i%len(from)])
			normal[connKey(c.LocalAddr())] = true
			la := c.LocalAddr().(*net.TCPAddr)
			sa := &unix.SockaddrInet4{Port: la.Port}
			copy(sa.Addr[:], la.IP.To4())
			clients = append(clients, sa)
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		during := nprobes()
		t.Logf("%s: %d Dials ran while %d clients connected", m, during, n)
		got := waitQueued(t, g, n+during)
		_ = got
		peers := acceptPeers(t, g)
		perActive := map[Target]int{}
		for tg, ps := range peers {
			for _, p := range ps {
				switch {
				case normal[p]:
					if !slices.Contains(active, tg) {
						t.Errorf("normal client %s reached inactive %v", p, tg)
					}
					perActive[tg]++
				case probes[p] != tg:
					t.Errorf("probe from %s for %v reached %v", p, probes[p], tg)
				}
			}
		}
		if m == EBPF {
			for _, tg := range active {
				if perActive[tg] != n/len(active) {
					t.Errorf("round robin with probes in between: %v, want %d on each active socket", perActive, n/len(active))
					break
				}
			}
		} else {
			want := map[Target]int{}
			for _, sa := range clients {
				want[active[classicFlowHash(sa)%uint32(len(active))]]++
			}
			if fmt.Sprint(want) != fmt.Sprint(perActive) {
				t.Errorf("flow hash with probes in between: %v, predicted %v", perActive, want)
			}
		}
	})
}

// TestDialLeavesNoEntry: once Dial returned, its source address and
// port are steered like any other: a connection bound explicitly to
// the same address and port goes where normal traffic goes.
func TestDialLeavesNoEntry(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		for _, l := range listeners(t) {
			g := newTestGroup(t, l, 2, ModeSteer, m)
			if err := g.Steer([]Target{{0, 0}}); err != nil {
				t.Fatal(err)
			}
			c := probe(t, g, Target{1, 1})
			local := c.LocalAddr().(*net.TCPAddr)
			waitQueued(t, g, 1)
			if got := acceptPeers(t, g); len(got[Target{1, 1}]) != 1 {
				t.Fatalf("%s: the probe reached %v", l, got)
			}
			if left := probesLeft(t, g); left != "" {
				t.Errorf("%s: %s", l, left)
			}
			// Reset (no TIME_WAIT), so that the port can be bound again.
			if err := c.(*net.TCPConn).SetLinger(0); err != nil {
				t.Fatal(err)
			}
			c.Close()
			d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
			again, err := d.Dial("tcp", c.RemoteAddr().String())
			if err != nil {
				t.Fatalf("%s: connect again from %s: %v", l, local, err)
			}
			defer again.Close()
			q := waitQueued(t, g, 1)
			if q[Target{0, 0}] != 1 {
				t.Errorf("%s: a later connection from the probe's %s went to %v, not to slot 0 bank 0 like normal traffic", l, local, q)
			}
			acceptAll(t, g)
			g.Close()
		}
	})
}

// TestDialKeyIsAddressAndPort: a probe entry matches the source address
// and port together: a client from another address (or the other
// family, on a dual-stack wildcard) with the same port is steered
// normally.
func TestDialKeyIsAddressAndPort(t *testing.T) {
	// The other client connects from other to otherTo.
	type pair struct{ probe, other, otherTo string }
	cases := map[string]pair{"tcp://127.0.0.1:0": {"127.0.0.1", "127.0.0.2", "127.0.0.1"}}
	if hasIPv6(t) {
		cases["tcp://:0"] = pair{"::1", "127.0.0.1", "127.0.0.1"}
	}
	forEach(t, func(t *testing.T, m Mechanism) {
		for l, p := range cases {
			g := newTestGroup(t, l, 2, ModeSteer, m)
			if err := g.Steer([]Target{{0, 0}}); err != nil {
				t.Fatal(err)
			}
			probeSock, otherSock, port := samePort(t, p.probe, p.other)
			g.mu.Lock()
			r, idx, err := g.probeTarget(1, 1)
			g.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if net.IP(r.wire).String() != p.probe {
				t.Fatalf("%s: probes come from %v, want %s", l, net.IP(r.wire), p.probe)
			}
			if err := g.addProbe(port, idx, r.wire); err != nil {
				t.Fatal(err)
			}
			_, lport, _ := net.SplitHostPort(g.Addr())
			for _, s := range []struct {
				fd   int
				from string
				want Target
			}{{otherSock, p.other, Target{0, 0}}, {probeSock, p.probe, Target{1, 1}}} {
				to := net.JoinHostPort(p.otherTo, lport)
				if s.fd == probeSock {
					to = net.JoinHostPort(p.probe, lport)
				}
				connectFd(t, s.fd, to)
				if q := waitQueued(t, g, 1); q[s.want] != 1 {
					t.Errorf("%s: a client from %s port %d went to %v, want %v", l, s.from, port, q, s.want)
				}
				acceptAll(t, g)
			}
			if err := g.removeProbe(port); err != nil {
				t.Fatal(err)
			}
			if left := probesLeft(t, g); left != "" {
				t.Errorf("%s: %s", l, left)
			}
			g.Close()
		}
	})
}

// samePort binds two TCP sockets, one to address a and one to b, with
// the same port the kernel picked for the first.
func samePort(t *testing.T, a, b string) (int, int, uint16) {
	t.Helper()
	for try := 0; try < 20; try++ {
		fa := boundSocket(t, a, 0)
		sa, _ := unix.Getsockname(fa)
		port := sockaddrPort(sa)
		fb := boundSocket(t, b, port)
		if fb >= 0 {
			return fa, fb, uint16(port)
		}
	}
	t.Fatalf("no port free on both %s and %s", a, b)
	return -1, -1, 0
}

// boundSocket returns a TCP socket bound to ip and port (closed when the
// test ends), or -1 if the port is in use.
func boundSocket(t *testing.T, ip string, port int) int {
	t.Helper()
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if v4 := net.ParseIP(ip).To4(); v4 != nil {
		a := &unix.SockaddrInet4{Port: port}
		copy(a.Addr[:], v4)
		sa = a
	} else {
		a := &unix.SockaddrInet6{Port: port}
		copy(a.Addr[:], net.ParseIP(ip))
		family, sa = unix.AF_INET6, a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return -1
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// connectFd connects the blocking socket fd to addr.
func connectFd(t *testing.T, fd int, addr string) {
	t.Helper()
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	if v4 := ta.IP.To4(); v4 != nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		copy(a.Addr[:], v4)
		sa = a
	} else {
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP)
		sa = a
	}
	if err := unix.Connect(fd, sa); err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
}

// TestDialContext: a Dial whose target drops the SYN (its accept queue
// is full) waits until its context times out or is canceled, and leaves
// no probe entry; the target takes probes again once it has room.
func TestDialContext(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{0, 0}}); err != nil {
			t.Fatal(err)
		}
		full := g.Fd(1, 1)
		// A backlog of 0 admits one connection, then drops SYNs.
		if err := unix.Listen(full, 0); err != nil {
			t.Fatal(err)
		}
		probe(t, g, Target{1, 1})
		waitQueued(t, g, 1)

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if c, err := g.Dial(ctx, 1, 1); err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial to a full queue with a timeout: %v, %v", c, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("a multi-line error: %q", err)
		}
		if left := probesLeft(t, g); left != "" {
			t.Errorf("after a timeout: %s", left)
		}

		ctx, cancel = context.WithCancel(context.Background())
		res := make(chan error, 1)
		go func() {
			c, err := g.Dial(ctx, 1, 1)
			if c != nil {
				c.Close()
			}
			res <- err
		}()
		waitFor(t, "the Dial to register", func() (bool, string) {
			left := probesLeft(t, g)
			return strings.Contains(left, "registered") && (m == CBPF || strings.Contains(left, "probe map")), left
		})
		cancel()
		if err := <-res; !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled Dial: %v", err)
		}
		if left := probesLeft(t, g); left != "" {
			t.Errorf("after a cancel: %s", left)
		}
		if _, err := g.Dial(ctx, 1, 1); !errors.Is(err, context.Canceled) {
			t.Errorf("Dial with a canceled context: %v", err)
		}

		if err := unix.Listen(full, backlog()); err != nil {
			t.Fatal(err)
		}
		acceptAll(t, g)
		probe(t, g, Target{1, 1})
		if q := waitQueued(t, g, 1); q[Target{1, 1}] != 1 {
			t.Errorf("once the queue has room: %v", q)
		}
	})
}

// TestDialTargetGone: a socket shut down by a worker (it leaves the
// group) is an error before anything is sent; and with eBPF, a probe
// whose target left the group in the middle of the Dial is refused
// (SK_DROP) rather than steered to another socket.
func TestDialTargetGone(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{0, 0}}); err != nil {
			t.Fatal(err)
		}
		// The last member: shutting it down moves no other.
		gone := Target{Slot: 1, Bank: 1}
		if err := unix.Shutdown(g.Fd(gone.Bank, gone.Slot), unix.SHUT_RDWR); err != nil {
			t.Fatal(err)
		}
		_, err := g.Dial(dialCtx(t), gone.Bank, gone.Slot)
		if err == nil || !strings.Contains(err.Error(), "no longer listening") {
			t.Errorf("Dial to a shut down socket: %v", err)
		}
		if m != EBPF {
			return
		}
		// Register as Dial would once past its check, then connect.
		sock, _, port := samePort(t, "127.0.0.1", "127.0.0.2")
		g.mu.Lock()
		r, _, err := g.probeTarget(0, 1)
		g.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.addProbe(port, index(gone), r.wire); err != nil {
			t.Fatal(err)
		}
		defer g.removeProbe(port)
		err = unix.Connect(sock, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: sockaddrPort(g.sa)})
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("a probe for a socket that left the group: %v, want connection refused", err)
		}
		for _, tg := range targets(g) {
			if tg == gone {
				continue
			}
			if q, err := g.QueueLen(tg.Bank, tg.Slot); err != nil || q != 0 {
				t.Errorf("%v: %d queued, %v", tg, q, err)
			}
		}
	})
}

// TestDialBadInput: each mistake is one precise error line, and leaves
// no descriptor and no probe entry behind.
func TestDialBadInput(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		before := openFds(t)
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		u := newTestGroup(t, "udp://127.0.0.1:0", 2, ModeSteer, m)
		ctx := dialCtx(t)
		check := func(what string, err error, want string) {
			t.Helper()
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: %v, want one line with %q", what, err, want)
			}
		}
		_, err := u.Dial(ctx, 0, 0)
		check("UDP", err, "probes are TCP")
		_, err = g.Dial(ctx, 2, 0)
		check("bank 2", err, "bank 2 (want 0 or 1)")
		_, err = g.Dial(ctx, 0, 2)
		check("slot 2", err, "slot 2 out of range (the group has 2 slots)")
		_, err = g.Dial(ctx, 0, -1)
		check("slot -1", err, "slot -1 out of range")

		// maxProbes in flight: one more is refused.
		g.mu.Lock()
		r, _, err := g.probeTarget(0, 0)
		g.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		for i := range maxProbes {
			if err := g.addProbe(uint16(1+i), 1, r.wire); err != nil {
				t.Fatalf("probe %d: %v", i, err)
			}
		}
		_, err = g.Dial(ctx, 1, 1)
		check("one probe too many", err, "64 probes already in flight (the limit is 64)")
		for i := range maxProbes {
			if err := g.removeProbe(uint16(1 + i)); err != nil {
				t.Fatal(err)
			}
		}
		if left := probesLeft(t, g); left != "" {
			t.Errorf("%s", left)
		}
		g.Close()
		_, err = g.Dial(ctx, 0, 0)
		check("closed", err, "group closed")
		u.Close()
		if after := openFds(t); after != before {
			t.Errorf("%d descriptors open before, %d after", before, after)
		}
	})
}

// TestDialAfterHandover: a group taken over by a new master Dials as
// before; entries an old master left in the probe map (it stopped in
// the middle of a Dial) are dropped; and a group handed over by a master
// of eBPF layout 1 (four descriptors, no probe map) gets a new selector
// that Dials.
func TestDialAfterHandover(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		old := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := old.Steer([]Target{{0, 0}}); err != nil {
			t.Fatal(err)
		}
		probe(t, old, Target{1, 0})
		waitQueued(t, old, 1)
		acceptAll(t, old)
		old.mu.Lock()
		r, _, _ := old.probeTarget(1, 1)
		old.mu.Unlock()
		if err := old.addProbe(7, index(Target{1, 1}), r.wire); err != nil {
			t.Fatal(err)
		}
		st, fds := old.Export()
		g, err := Import(st, dupAll(t, fds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		if m == EBPF {
			if left := probesLeft(t, g); left != "" {
				t.Errorf("the new master kept the old one's probe entry: %s", left)
			}
		}
		old.Close()
		for _, tg := range []Target{{1, 1}, {0, 1}} {
			c := probe(t, g, tg)
			if q := waitQueued(t, g, 1); q[tg] != 1 {
				t.Errorf("after the hand-over, Dial %v: %v", tg, q)
			}
			acceptAll(t, g)
			c.Close()
		}
		if got := connectAndCount(t, g, 4); got[Target{0, 0}] != 4 {
			t.Errorf("after the hand-over and Dials: %v", got)
		}
		if m != EBPF {
			return
		}
		// A layout 1 master hands over four eBPF descriptors.
		st, fds = g.Export()
		d := dupAll(t, fds[:len(fds)-(ebpfFds-ebpfFdsV1)])
		st.Layout = 1
		g1, err := Import(st, d)
		if err != nil {
			t.Fatal(err)
		}
		defer g1.Close()
		g.Close()
		if g1.Mechanism() != EBPF || g1.Fallback() != nil {
			t.Fatalf("from layout 1: %s (%v)", g1.Mechanism(), g1.Fallback())
		}
		probe(t, g1, Target{1, 1})
		if q := waitQueued(t, g1, 1); q[Target{1, 1}] != 1 {
			t.Errorf("after a hand-over from layout 1, Dial: %v", q)
		}
	})
}

// TestDialWorker: a worker process accepting on an inactive socket
// answers the master's Dial; the Dial leaves the group's members as
// they were (same descriptors, same indices, no new member).
func TestDialWorker(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{0, 0}}); err != nil {
			t.Fatal(err)
		}
		fdsBefore := map[Target]int{}
		for _, tg := range targets(g) {
			fdsBefore[tg] = g.Fd(tg.Bank, tg.Slot)
		}
		target := Target{Slot: 1, Bank: 1}
		f := os.NewFile(uintptr(dupAll(t, []int{g.Fd(target.Bank, target.Slot)})[0]), "slot1bank1")
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), childEnv+"=accept", "N=1")
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		c := probe(t, g, target)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if b, err := io.ReadAll(c); err != nil || string(b) != "hello\n" {
			t.Errorf("the worker on %v answered %q, %v", target, b, err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker: %v", err)
		}

		for _, tg := range targets(g) {
			if fd := g.Fd(tg.Bank, tg.Slot); fd != fdsBefore[tg] {
				t.Errorf("%v: descriptor %d, was %d", tg, fd, fdsBefore[tg])
			}
		}
		// Same indices: steering to each socket alone lands there.
		for _, tg := range targets(g) {
			if err := g.Steer([]Target{tg}); err != nil {
				t.Fatal(err)
			}
			if got := connectAndCount(t, g, 2, "127.0.0.2", "127.0.0.3"); got[tg] != 2 {
				t.Errorf("steered to %v after the Dial: %v", tg, got)
			}
		}
		// No new member: with no valid choice the kernel hashes over
		// the whole group, and every connection lands on one of its
		// four sockets (waitQueued counts only those).
		g.mu.Lock()
		var err error
		if m == CBPF {
			err = attachClassic(g.fds[0], []unix.SockFilter{stmt(retK, uint32(len(g.fds)))})
		} else {
			err = g.ebpf.set(confRoundRobin, nil, nil)
		}
		g.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		connectAndCount(t, g, 16)
	})
}

// TestProbePrefixFits: the classic probe prefix's jumps fit their 8-bit
// offsets with maxProbes probes, and the longest prefix is probeReserve.
func TestProbePrefixFits(t *testing.T) {
	probes := map[uint16]int{}
	for i := range maxProbes {
		probes[uint16(1000+i)] = i
	}
	for _, addr := range [][]byte{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback} {
		p := probePrefix(addr, probes)
		if len(p) > probeReserve || len(p) > 256 {
			t.Errorf("%v: %d instructions, probeReserve %d", net.IP(addr), len(p), probeReserve)
		}
		for i, in := range p {
			if in.Code == jeqK && i+1+int(in.Jf) != len(p) && in.Jf != 1 {
				t.Errorf("%v: instruction %d jumps to %d", net.IP(addr), i, i+1+int(in.Jf))
			}
		}
	}
}
