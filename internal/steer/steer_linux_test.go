//go:build linux

package steer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSteerAway: a socket steered away from gets no new connection; the
// active ones all get some.
func TestSteerAway(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, m)
		active := []Target{{0, 0}, {1, 0}, {3, 0}}
		if err := g.Steer(active); err != nil {
			t.Fatal(err)
		}
		got := connectAndCount(t, g, 60)
		for _, tg := range targets(g) {
			on := tg.Bank == 0 && tg.Slot != 2
			if !on && got[tg] > 0 {
				t.Errorf("%v is not active but got %d connections", tg, got[tg])
			}
			if on && got[tg] == 0 {
				t.Errorf("%v is active but got no connection of 60", tg)
			}
		}
		// Switching to a single socket of the other bank moves every
		// new connection there.
		if err := g.Steer([]Target{{2, 1}}); err != nil {
			t.Fatal(err)
		}
		got = connectAndCount(t, g, 10)
		if got[Target{2, 1}] != 10 {
			t.Errorf("steered to slot 2 bank 1 only, got %v", got)
		}
	})
}

// TestEveryTarget steers to each socket alone: connections land exactly
// there, which proves the index arithmetic (classic BPF returns join
// order positions) and the socket array keys.
func TestEveryTarget(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		for _, mode := range []Mode{ModeSteer, ModeSticky} {
			g := newTestGroup(t, "tcp://127.0.0.1:0", 3, mode, m)
			for _, tg := range targets(g) {
				if err := g.Steer([]Target{tg}); err != nil {
					t.Fatal(err)
				}
				got := connectAndCount(t, g, 3, "127.0.0.2", "127.0.0.3", "127.0.0.4")
				if got[tg] != 3 {
					t.Errorf("%s: steered to %v, got %v", mode, tg, got)
				}
			}
		}
	})
}

// TestBalance reports how evenly connections spread: eBPF round robin is
// exact (asserted: it is a counter, not chance), hashing is chance.
func TestBalance(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, m)
		got := connectAndCount(t, g, 64)
		lo, hi, s := spread(got, bank(4, 0))
		t.Logf("%s: 64 TCP connections over 4 active sockets: min %d max %d (%s)", g, lo, hi, s)
		if m == EBPF && (lo != 16 || hi != 16) {
			t.Errorf("round robin: want 16 on each socket, got %s", s)
		}
		if lo == 0 {
			t.Errorf("a socket got none of 64 connections: %s", s)
		}
		u := newTestGroup(t, "udp://127.0.0.1:0", 4, ModeSteer, m)
		var cs []*net.UDPConn
		for i := 0; i < 32; i++ {
			cs = append(cs, udpClient(t, u.Addr(), fmt.Sprintf("127.0.0.%d", 2+i%8)))
		}
		_, per := sendAndCollect(t, u, cs, 2)
		lo, hi, s = spread(per, bank(4, 0))
		t.Logf("%s: 32 UDP flows (2 datagrams each) over 4 active sockets: min %d max %d datagrams (%s)", u, lo, hi, s)
	})
}

// clientSlot is where sticky mode puts a client address.
func clientSlot(ip string, slots int) int {
	return int(clientHash(addrWords(net.ParseIP(ip))) % uint32(slots))
}

// addrWords is an address as the big-endian words the programs load.
func addrWords(ip net.IP) []uint32 {
	if v4 := ip.To4(); v4 != nil {
		return []uint32{binary.BigEndian.Uint32(v4)}
	}
	var words []uint32
	for i := 0; i < 16; i += 4 {
		words = append(words, binary.BigEndian.Uint32(ip[i:]))
	}
	return words
}

// classicFlowHash is the flow hash of the classic program in steer mode:
// the source address hash with the source port folded in.
func classicFlowHash(sa unix.Sockaddr) uint32 {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return fmix32(clientHash(addrWords(a.Addr[:])) ^ uint32(a.Port))
	case *unix.SockaddrInet6:
		return fmix32(clientHash(addrWords(a.Addr[:])) ^ uint32(a.Port))
	}
	return 0
}

// TestClassicFlowHash: in steer mode the classic program hashes source
// address and port (read at the transport header, after the IPv4 IHL or
// the 40-byte IPv6 header), exactly as predicted, for TCP and for UDP
// from unconnected sockets (whose skb->hash is 0, which is why the
// program does not use SKF_AD_RXHASH).
func TestClassicFlowHash(t *testing.T) {
	loopbacks := []string{"127.0.0.1"}
	if hasIPv6(t) {
		loopbacks = append(loopbacks, "::1")
	}
	for _, lo := range loopbacks {
		listen := "tcp://" + net.JoinHostPort(lo, "0")
		g := newTestGroup(t, listen, 4, ModeSteer, CBPF)
		active := []Target{{0, 0}, {1, 1}, {3, 0}}
		if err := g.Steer(active); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 24; i++ {
			dial(t, g.Addr(), "")
		}
		waitQueued(t, g, 24)
		for _, tg := range targets(g) {
			for _, sa := range acceptReadyAddrs(t, g.Fd(tg.Bank, tg.Slot)) {
				if want := active[classicFlowHash(sa)%3]; want != tg {
					t.Errorf("%s: connection from %v landed on %v, want %v", lo, sa, tg, want)
				}
			}
		}
	}
	u := newTestGroup(t, "udp://127.0.0.1:0", 4, ModeSteer, CBPF)
	ra, err := net.ResolveUDPAddr("udp", u.Addr())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Target{}
	for i := 0; i < 16; i++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.0.%d", 2+i))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		la := c.LocalAddr().(*net.UDPAddr)
		sa := &unix.SockaddrInet4{Port: la.Port}
		copy(sa.Addr[:], la.IP.To4())
		want[la.String()] = Target{int(classicFlowHash(sa) % 4), 0}
		for j := 0; j < 2; j++ {
			if _, err := c.WriteTo([]byte("x"), ra); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[Target]int{}
	n := 0
	waitFor(t, "32 datagrams", func() (bool, string) {
		for _, tg := range targets(u) {
			for _, src := range recvReady(t, u.Fd(tg.Bank, tg.Slot)) {
				if want[src] != tg {
					t.Errorf("datagram from unconnected %s landed on %v, want %v", src, tg, want[src])
				}
				got[tg]++
				n++
			}
		}
		return n == 32, fmt.Sprint(got)
	})
	lo, hi, s := spread(got, bank(4, 0))
	t.Logf("16 unconnected UDP senders: min %d max %d datagrams (%s)", lo, hi, s)
}

// clientFallback is where sticky mode puts a client whose slot has no
// active socket: the active sockets, sorted by slot, hashed over.
func clientFallback(ip string, active []Target) Target {
	h := clientHash(addrWords(net.ParseIP(ip)))
	return active[h%uint32(len(active))]
}

// TestSticky: each client address lands on the slot its hash names;
// switching that slot to bank 1 moves its clients, and only them, to
// slot i of bank 1; without an active socket on their slot they hash
// over the active ones.
func TestSticky(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		const slots = 4
		g := newTestGroup(t, "tcp://127.0.0.1:0", slots, ModeSticky, m)
		var clients []string
		for i := 2; i < 18; i++ {
			clients = append(clients, fmt.Sprintf("127.0.0.%d", i))
		}
		check := func(where func(ip string) Target) {
			t.Helper()
			addr := dialAddr(g, "127.0.0.1")
			for round := 0; round < 2; round++ {
				for _, c := range clients {
					dial(t, addr, c)
				}
			}
			waitQueued(t, g, 2*len(clients))
			for tg, peers := range acceptAll(t, g) {
				for _, p := range peers {
					if want := where(p); want != tg {
						t.Errorf("client %s landed on %v, want %v", p, tg, want)
					}
				}
			}
		}
		check(func(ip string) Target { return Target{clientSlot(ip, slots), 0} })

		i := clientSlot(clients[0], slots)
		rolled := bank(slots, 0)
		rolled[i].Bank = 1
		if err := g.Steer(rolled); err != nil {
			t.Fatal(err)
		}
		check(func(ip string) Target {
			s := clientSlot(ip, slots)
			if s == i {
				return Target{s, 1}
			}
			return Target{s, 0}
		})

		var rest []Target
		for _, tg := range bank(slots, 0) {
			if tg.Slot != i {
				rest = append(rest, tg)
			}
		}
		if err := g.Steer(rest); err != nil {
			t.Fatal(err)
		}
		check(func(ip string) Target {
			if s := clientSlot(ip, slots); s != i {
				return Target{s, 0}
			}
			return clientFallback(ip, rest)
		})
	})
}

// hasIPv6 reports whether the host has ::1.
func hasIPv6(t *testing.T) bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback (%v): IPv6 cases skipped", err)
		return false
	}
	l.Close()
	return true
}

// TestIPv6: a tcp6 group on ::1 steers, and sticky mode hashes the IPv6
// source address (16 bytes at network offset 8) as predicted; a UDP
// group on ::1 as well.
func TestIPv6(t *testing.T) {
	if !hasIPv6(t) {
		t.Skip("host has no IPv6 loopback address")
	}
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp6://[::1]:0", 4, ModeSticky, m)
		want := Target{clientSlot("::1", 4), 0}
		got := connectAndCount(t, g, 8)
		if got[want] != 8 {
			t.Errorf("sticky IPv6: want all 8 on %v, got %v", want, got)
		}
		if err := g.Steer([]Target{{1, 1}}); err != nil {
			t.Fatal(err)
		}
		if got := connectAndCount(t, g, 4); got[Target{1, 1}] != 4 {
			t.Errorf("steered to slot 1 bank 1: got %v", got)
		}
		u := newTestGroup(t, "udp://[::1]:0", 4, ModeSticky, m)
		cs := []*net.UDPConn{udpClient(t, u.Addr(), "::1"), udpClient(t, u.Addr(), "::1")}
		_, per := sendAndCollect(t, u, cs, 3)
		if per[want] != 6 {
			t.Errorf("sticky IPv6 UDP: want all 6 datagrams on %v, got %v", want, per)
		}
	})
}

// TestDualStack: a wildcard group (tcp://:0) takes IPv4 and IPv6
// clients; sticky mode reads each family's source address.
func TestDualStack(t *testing.T) {
	if !hasIPv6(t) {
		t.Skip("host has no IPv6 loopback address")
	}
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://:0", 4, ModeSticky, m)
		_, port, _ := net.SplitHostPort(g.Addr())
		dial(t, net.JoinHostPort("::1", port), "")
		dial(t, net.JoinHostPort("127.0.0.1", port), "127.0.0.2")
		waitQueued(t, g, 2)
		for tg, peers := range acceptAll(t, g) {
			for _, p := range peers {
				if want := (Target{clientSlot(p, 4), 0}); want != tg {
					t.Errorf("%s landed on %v, want %v", p, tg, want)
				}
			}
		}
		if err := g.Steer([]Target{{3, 1}}); err != nil {
			t.Fatal(err)
		}
		dial(t, net.JoinHostPort("::1", port), "")
		dial(t, net.JoinHostPort("127.0.0.1", port), "")
		if q := waitQueued(t, g, 2); q[Target{3, 1}] != 2 {
			t.Errorf("both families steered to slot 3 bank 1: got %v", q)
		}
	})
}

// TestUDP: every datagram of a flow lands on one socket (no per-packet
// round robin, even in steer mode); steering away sends no datagram to
// the socket; sticky mode puts a client address on its slot.
func TestUDP(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "udp://127.0.0.1:0", 4, ModeSteer, m)
		if g.Selection() != "flow-hash" {
			t.Errorf("UDP in steer mode selects by %s, want flow-hash", g.Selection())
		}
		var cs []*net.UDPConn
		for i := 0; i < 16; i++ {
			cs = append(cs, udpClient(t, g.Addr(), fmt.Sprintf("127.0.0.%d", 2+i%4)))
		}
		oneSocket := func(bySrc map[string]map[Target]int) {
			t.Helper()
			for src, on := range bySrc {
				if len(on) != 1 {
					t.Errorf("flow %s split over %v", src, on)
				}
			}
		}
		bySrc, per := sendAndCollect(t, g, cs, 6)
		oneSocket(bySrc)
		busiest := Target{}
		for tg, n := range per {
			if tg.Bank != 0 {
				t.Errorf("bank 1 is not active but %v got %d datagrams", tg, n)
			}
			if n > per[busiest] {
				busiest = tg
			}
		}
		var rest []Target
		for _, tg := range bank(4, 0) {
			if tg != busiest {
				rest = append(rest, tg)
			}
		}
		if err := g.Steer(rest); err != nil {
			t.Fatal(err)
		}
		bySrc, per = sendAndCollect(t, g, cs, 6)
		oneSocket(bySrc)
		if per[busiest] != 0 {
			t.Errorf("steered away from %v, it still got %d datagrams", busiest, per[busiest])
		}

		s := newTestGroup(t, "udp://127.0.0.1:0", 4, ModeSticky, m)
		cs = cs[:0]
		for i := 0; i < 8; i++ {
			cs = append(cs, udpClient(t, s.Addr(), fmt.Sprintf("127.0.0.%d", 2+i)))
		}
		bySrc, _ = sendAndCollect(t, s, cs, 3)
		for src, on := range bySrc {
			ip, _, _ := net.SplitHostPort(src)
			want := Target{clientSlot(ip, 4), 0}
			if len(on) != 1 || on[want] != 3 {
				t.Errorf("sticky UDP: %s landed on %v, want %v", src, on, want)
			}
		}
	})
}

// TestQueueLen counts queued connections exactly, and UDP queues.
func TestQueueLen(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{1, 0}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 37; i++ {
			dial(t, g.Addr(), "")
		}
		waitFor(t, "37 queued on slot 1", func() (bool, string) {
			n, err := g.QueueLen(0, 1)
			if err != nil {
				t.Fatal(err)
			}
			return n == 37, fmt.Sprint(n)
		})
		fd := g.Fd(0, 1)
		for i := 0; i < 10; i++ {
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(c)
		}
		if n, err := g.QueueLen(0, 1); err != nil || n != 27 {
			t.Errorf("after 10 accepts: QueueLen %d, %v; want 27", n, err)
		}
		if _, err := g.QueueLen(2, 0); err == nil {
			t.Error("QueueLen of bank 2: no error")
		}

		u := newTestGroup(t, "udp://127.0.0.1:0", 2, ModeSteer, m)
		if err := u.Steer([]Target{{0, 1}}); err != nil {
			t.Fatal(err)
		}
		c := udpClient(t, u.Addr(), "")
		for i := 0; i < 3; i++ {
			if _, err := c.Write([]byte("datagram")); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "datagrams queued", func() (bool, string) {
			n, err := u.QueueLen(1, 0)
			if err != nil {
				t.Fatal(err)
			}
			return n > 0, fmt.Sprint(n)
		})
		var got []string
		waitFor(t, "3 datagrams", func() (bool, string) {
			got = append(got, recvReady(t, u.Fd(1, 0))...)
			return len(got) == 3, fmt.Sprintf("%d received", len(got))
		})
		if n, err := u.QueueLen(1, 0); err != nil || n != 0 {
			t.Errorf("UDP QueueLen after reading everything: %d, %v; want 0", n, err)
		}
	})
}

// TestEmptySteerKeepsChoice: with no active socket named, connections go
// on landing where they did; none is refused.
func TestEmptySteerKeepsChoice(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 3, ModeSteer, m)
		if err := g.Steer([]Target{{2, 0}}); err != nil {
			t.Fatal(err)
		}
		if err := g.Steer(nil); err != nil {
			t.Fatal(err)
		}
		if got := connectAndCount(t, g, 6); got[Target{2, 0}] != 6 {
			t.Errorf("after Steer(nil): got %v, want all 6 on slot 2 bank 0", got)
		}
	})
}

// TestNewSteersToBankZero: before the first Steer a group sends
// connections to bank 0 only.
func TestNewSteersToBankZero(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 3, ModeSteer, m)
		for tg, n := range connectAndCount(t, g, 30) {
			if tg.Bank != 0 {
				t.Errorf("%v got %d connections before any Steer", tg, n)
			}
		}
	})
}

// TestWaitDrained: steered drain returns once the queue has been empty
// for the quiet period, not before.
func TestWaitDrained(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		if err := g.Steer([]Target{{0, 0}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			dial(t, g.Addr(), "")
		}
		waitQueued(t, g, 3)
		if err := g.Steer([]Target{{1, 0}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		err := g.WaitDrained(ctx, 0, 0, time.Time{}, 5*time.Millisecond)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitDrained with 3 queued and nobody accepting: %v, want deadline exceeded", err)
		}
		if got := len(acceptReady(t, g.Fd(0, 0))); got != 3 {
			t.Fatalf("accepted %d, want 3", got)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		if err := g.WaitDrained(ctx, 0, 0, time.Time{}, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Errorf("WaitDrained returned after %v, before the quiet period", d)
		}
		// Steered away long ago and empty: no wait (a done context
		// would be the error otherwise).
		done, cancelDone := context.WithCancel(context.Background())
		cancelDone()
		if err := g.WaitDrained(done, 0, 0, time.Now().Add(-time.Minute), time.Second); err != nil {
			t.Errorf("WaitDrained of a socket quiet for a minute waited: %v", err)
		}
	})
}

// TestGrow: new slots join at the end; old and new sockets are steered to
// precisely.
func TestGrow(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, m)
		before := map[Target]int{}
		for _, tg := range targets(g) {
			before[tg] = g.Fd(tg.Bank, tg.Slot)
		}
		if err := g.Grow(5); err != nil {
			t.Fatal(err)
		}
		if err := g.Grow(3); err != nil || g.Slots() != 5 {
			t.Fatalf("Grow(3) after Grow(5): %v, %d slots", err, g.Slots())
		}
		for tg, fd := range before {
			if g.Fd(tg.Bank, tg.Slot) != fd {
				t.Errorf("%v changed descriptor", tg)
			}
		}
		for _, tg := range []Target{{4, 1}, {2, 0}, {0, 1}, {1, 0}, {3, 1}} {
			if err := g.Steer([]Target{tg}); err != nil {
				t.Fatal(err)
			}
			if got := connectAndCount(t, g, 3); got[tg] != 3 {
				t.Errorf("after growing, steered to %v: got %v", tg, got)
			}
		}
		if err := g.Grow(MaxSlots + 1); err == nil {
			t.Error("Grow beyond MaxSlots: no error")
		}
	})
}

// TestOutOfRangeClassicIndex proves what the kernel does with a classic
// program returning an index past the group (reuseport_select_sock: no
// choice, hash over every socket of the group, inactive ones included),
// and, for eBPF, with SK_PASS and no socket selected (the same): nothing
// is refused, but connections reach sockets nobody steered to. Hence
// the programs here never do either.
func TestOutOfRangeClassicIndex(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, m)
		g.mu.Lock()
		var err error
		if m == CBPF {
			err = attachClassic(g.fds[0], []unix.SockFilter{stmt(retK, 99)})
		} else {
			err = g.ebpf.set(confRoundRobin, nil, nil) // n = 0: select nothing
		}
		g.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		got := connectAndCount(t, g, 64)
		lo, hi, s := spread(got, targets(g))
		t.Logf("%s: no valid choice: 64 connections over all 8 sockets: min %d max %d (%s)", m, lo, hi, s)
		bank1 := 0
		for tg, n := range got {
			if tg.Bank == 1 {
				bank1 += n
			}
		}
		if bank1 == 0 {
			t.Errorf("no connection reached bank 1: the kernel did not hash over the whole group (%s)", s)
		}
	})
}

// TestClassicProgramFits: the worst case, 1024 slots whose active banks
// alternate, with the longest probe prefix (maxProbes IPv6 probes),
// builds a program within BPF_MAXINSNS that the kernel accepts.
func TestClassicProgramFits(t *testing.T) {
	var active []Target
	for s := 0; s < MaxSlots; s++ {
		active = append(active, Target{Slot: s, Bank: s % 2})
	}
	probes := map[uint16]int{}
	for i := range maxProbes {
		probes[uint16(40000+i)] = 2*MaxSlots - 1 - i
	}
	prefix := probePrefix(net.IPv6loopback, probes)
	if len(prefix) != probeReserve {
		t.Errorf("a prefix for %d IPv6 probes has %d instructions, probeReserve is %d", maxProbes, len(prefix), probeReserve)
	}
	for _, mode := range []Mode{ModeSteer, ModeSticky} {
		p, err := classic(mode, MaxSlots, active, maxIns-probeReserve)
		if err != nil {
			t.Fatal(err)
		}
		p = append(prefix, p...)
		t.Logf("%s, %d alternating active sockets and %d IPv6 probes: %d instructions", mode, len(active), maxProbes, len(p))
		if len(p) > maxIns {
			t.Fatalf("%d instructions", len(p))
		}
		g := newTestGroup(t, "tcp://127.0.0.1:0", 1, ModeSteer, CBPF)
		if err := attachClassic(g.Fd(0, 0), p); err != nil {
			t.Fatalf("kernel refused the program: %v", err)
		}
	}
}

// TestTable runs the lookup tables classic programs use through a small
// interpreter of the instructions they contain, for every key.
func TestTable(t *testing.T) {
	cases := [][]int{
		{0},
		{0, 2, 4, 6},
		{1, 3, 5, 7, 9},
		{-1, 3, -1, 7, 8, 11, 13, -1},
		{10, 12, 14, 1, 3, 5, 6, 8},
		{6, 4, 2, 0},
	}
	for _, idx := range cases {
		p := table(nil, idx)
		for key := 0; key < len(idx)+2; key++ {
			got, ok := runTable(t, p, uint32(key))
			want := -1
			if key < len(idx) {
				want = idx[key]
			}
			if (want < 0) != !ok || (ok && int(got) != want) {
				t.Errorf("table %v, key %d: got %d (returned %v), want %d", idx, key, got, ok, want)
			}
		}
	}
}

// runTable interprets p from accumulator a: the value returned, or false
// if execution falls off the end.
func runTable(t *testing.T, p []unix.SockFilter, a uint32) (uint32, bool) {
	for pc := 0; pc < len(p); pc++ {
		in := p[pc]
		switch in.Code {
		case jeqK, jgtK, jgeK:
			c := (in.Code == jeqK && a == in.K) || (in.Code == jgtK && a > in.K) || (in.Code == jgeK && a >= in.K)
			if c {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case lshK:
			a <<= in.K
		case addK:
			a += in.K
		case retK:
			return in.K, true
		case retA:
			return a, true
		default:
			t.Fatalf("unexpected opcode %#x", in.Code)
		}
	}
	return 0, false
}
