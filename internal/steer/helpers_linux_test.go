//go:build linux

package steer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// mechanisms returns the mechanisms to test: classic BPF always, eBPF
// when the process may load it (as root).
func mechanisms(t *testing.T) []Mechanism {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: eBPF cases skipped, classic BPF only")
		return []Mechanism{CBPF}
	}
	return []Mechanism{EBPF, CBPF}
}

func forEach(t *testing.T, f func(t *testing.T, m Mechanism)) {
	for _, m := range mechanisms(t) {
		t.Run(string(m), func(t *testing.T) { f(t, m) })
	}
}

func newTestGroup(t *testing.T, listen string, slots int, mode Mode, m Mechanism) *Group {
	t.Helper()
	spec, err := upgrade.ParseSpec("t=" + listen)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(spec, Options{Slots: slots, Mode: mode, Mechanism: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	if g.Mechanism() != m {
		t.Fatalf("mechanism %s, want %s", g.Mechanism(), m)
	}
	return g
}

// waitFor polls cond until it holds or 20 seconds pass.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, state)
		}
		time.Sleep(time.Millisecond)
	}
}

// dial opens a TCP connection to addr from local IP from ("" for any)
// and keeps it open until the test ends.
func dial(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %q: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialAddr returns the address to dial for a group: the loopback address
// of the right family for a wildcard.
func dialAddr(g *Group, loopback string) string {
	_, port, _ := net.SplitHostPort(g.Addr())
	host, _, _ := net.SplitHostPort(g.Addr())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = loopback
	}
	return net.JoinHostPort(host, port)
}

// targets lists every socket of a group.
func targets(g *Group) []Target {
	var ts []Target
	for s := 0; s < g.Slots(); s++ {
		for b := 0; b < Banks; b++ {
			ts = append(ts, Target{Slot: s, Bank: b})
		}
	}
	return ts
}

func bank(slots, b int) []Target {
	ts := make([]Target, slots)
	for s := range ts {
		ts[s] = Target{Slot: s, Bank: b}
	}
	return ts
}

// waitQueued waits until the accept queues of the group hold n
// connections in all.
func waitQueued(t *testing.T, g *Group, n int) map[Target]int {
	t.Helper()
	var q map[Target]int
	waitFor(t, fmt.Sprintf("%d queued connections", n), func() (bool, string) {
		q = map[Target]int{}
		sum := 0
		for _, tg := range targets(g) {
			l, err := g.QueueLen(tg.Bank, tg.Slot)
			if err != nil {
				t.Fatal(err)
			}
			if l > 0 {
				q[tg] = l
			}
			sum += l
		}
		return sum == n, fmt.Sprintf("%d queued: %v", sum, q)
	})
	return q
}

// acceptReady accepts every connection waiting on listening socket fd
// without blocking, closes them, and returns their peer IPs.
func acceptReady(t *testing.T, fd int) []string {
	t.Helper()
	var peers []string
	for _, sa := range acceptReadyAddrs(t, fd) {
		peers = append(peers, peerIP(sa))
	}
	return peers
}

// acceptReadyAddrs is acceptReady returning whole peer addresses.
func acceptReadyAddrs(t *testing.T, fd int) []unix.Sockaddr {
	t.Helper()
	var peers []unix.Sockaddr
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if n == 0 {
			return peers
		}
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		unix.Close(nfd)
		peers = append(peers, sa)
	}
}

func peerIP(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.IP(a.Addr[:]).String()
	case *unix.SockaddrInet6:
		ip := net.IP(a.Addr[:])
		if v4 := ip.To4(); v4 != nil {
			return v4.String()
		}
		return ip.String()
	}
	return "?"
}

// acceptAll drains every socket of the group and returns, per socket,
// the peers it had queued.
func acceptAll(t *testing.T, g *Group) map[Target][]string {
	t.Helper()
	got := map[Target][]string{}
	for _, tg := range targets(g) {
		if p := acceptReady(t, g.Fd(tg.Bank, tg.Slot)); len(p) > 0 {
			got[tg] = p
		}
	}
	return got
}

// connectAndCount opens n connections to g (from the addresses in from,
// round-robin; none given: any), waits until all are queued, accepts
// them, and returns the count per socket.
func connectAndCount(t *testing.T, g *Group, n int, from ...string) map[Target]int {
	t.Helper()
	addr := dialAddr(g, "127.0.0.1")
	for i := 0; i < n; i++ {
		f := ""
		if len(from) > 0 {
			f = from[i%len(from)]
		}
		dial(t, addr, f)
	}
	q := waitQueued(t, g, n)
	got := acceptAll(t, g)
	for tg, peers := range got {
		if len(peers) != q[tg] {
			t.Fatalf("%v: QueueLen said %d, accepted %d", tg, q[tg], len(peers))
		}
	}
	return q
}

func spread(counts map[Target]int, over []Target) (lo, hi int, s string) {
	lo = -1
	var parts []string
	for _, tg := range over {
		c := counts[tg]
		if lo < 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
		parts = append(parts, fmt.Sprintf("s%d/b%d=%d", tg.Slot, tg.Bank, c))
	}
	sort.Strings(parts)
	return lo, hi, strings.Join(parts, " ")
}

// udpClient returns a UDP socket connected to addr from local IP from.
func udpClient(t *testing.T, addr, from string) *net.UDPConn {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var la *net.UDPAddr
	if from != "" {
		la = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	c, err := net.DialUDP("udp", la, ra)
	if err != nil {
		t.Fatalf("udp from %q: %v", from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvReady reads every datagram waiting on fd without blocking and
// returns their sources (ip:port).
func recvReady(t *testing.T, fd int) []string {
	t.Helper()
	var from []string
	buf := make([]byte, 2048)
	for {
		_, sa, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return from
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("recvfrom: %v", err)
		}
		p := 0
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			p = a.Port
		case *unix.SockaddrInet6:
			p = a.Port
		}
		from = append(from, net.JoinHostPort(peerIP(sa), fmt.Sprint(p)))
	}
}

// sendAndCollect sends n datagrams from each client and waits until the
// group has received them all; it returns, per source, the sockets that
// got its datagrams, and the datagram count per socket.
func sendAndCollect(t *testing.T, g *Group, clients []*net.UDPConn, n int) (map[string]map[Target]int, map[Target]int) {
	t.Helper()
	for i := 0; i < n; i++ {
		for _, c := range clients {
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	bySrc := map[string]map[Target]int{}
	per := map[Target]int{}
	total := 0
	waitFor(t, fmt.Sprintf("%d datagrams", n*len(clients)), func() (bool, string) {
		for _, tg := range targets(g) {
			for _, src := range recvReady(t, g.Fd(tg.Bank, tg.Slot)) {
				if bySrc[src] == nil {
					bySrc[src] = map[Target]int{}
				}
				bySrc[src][tg]++
				per[tg]++
				total++
			}
		}
		return total == n*len(clients), fmt.Sprintf("%d received", total)
	})
	return bySrc, per
}
