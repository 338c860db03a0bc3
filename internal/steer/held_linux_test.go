//go:build linux

package steer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loadAwareGroup is a TCP group with eBPF whose held connections are
// counted; the test is skipped where eBPF cannot be loaded.
func loadAwareGroup(t *testing.T, loopback string, slots int) *Group {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("eBPF needs root")
	}
	g := newTestGroup(t, "tcp://"+net.JoinHostPort(loopback, "0"), slots, ModeSteer, EBPF)
	if err := g.LoadAware(); err != nil {
		t.Fatalf("not load-aware: %v", err)
	}
	if s := g.Selection(); s != "least-held" {
		t.Fatalf("selection %q, want least-held", s)
	}
	return g
}

// loopbacks returns 127.0.0.1, and ::1 where the host has IPv6.
func loopbacks(t *testing.T) []string {
	lo := []string{"127.0.0.1"}
	if hasIPv6(t) {
		lo = append(lo, "::1")
	}
	return lo
}

// worker accepts on one socket of a group as a worker process would,
// and keeps what it accepted open (keep-alive) until told otherwise.
type worker struct {
	t    *testing.T
	fd   int
	mu   sync.Mutex
	busy bool       // accepts nothing while set
	conn []int      // accepted, still open
	peer []net.Addr // their clients' addresses
	stop chan struct{}
	done chan struct{}
}

func startWorker(t *testing.T, fd int) *worker {
	w := &worker{t: t, fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	t.Cleanup(w.close)
	return w
}

func (w *worker) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.mu.Lock()
		busy := w.busy
		w.mu.Unlock()
		if busy {
			_, _ = unix.Poll(nil, 5)
			continue
		}
		p := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(p, 5); n == 0 || err != nil {
			continue
		}
		// Only this goroutine accepts on fd, so accept does not block.
		c, sa, err := unix.Accept4(w.fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
				w.t.Errorf("accept: %v", err)
				return
			}
			continue
		}
		w.mu.Lock()
		w.conn = append(w.conn, c)
		w.peer = append(w.peer, sockaddrAddr(sa))
		w.mu.Unlock()
	}
}

func sockaddrAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return nil
}

func (w *worker) setBusy(b bool) {
	w.mu.Lock()
	w.busy = b
	w.mu.Unlock()
}

// accepted returns how many connections the worker accepted and still
// holds.
func (w *worker) accepted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conn)
}

// closeAll closes every connection the worker holds.
func (w *worker) closeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.conn {
		if c >= 0 {
			unix.Close(c)
		}
	}
	w.conn, w.peer = nil, nil
}

func (w *worker) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.closeAll()
}

// heldOf reads Held for every bank-0 socket of the first slots.
func heldOf(t *testing.T, g *Group, slots int) []int {
	t.Helper()
	h := make([]int, slots)
	for s := range h {
		n, err := g.Held(0, s)
		if err != nil {
			t.Fatal(err)
		}
		h[s] = n
	}
	return h
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// waitHeld waits until Held of the bank-0 sockets is want.
func waitHeld(t *testing.T, g *Group, want []int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("held %v", want), func() (bool, string) {
		h := heldOf(t, g, len(want))
		return fmt.Sprint(h) == fmt.Sprint(want), fmt.Sprintf("held %v", h)
	})
}

// dialed opens a connection to addr and returns it; the caller closes it.
func dialed(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return c
}

// TestHeldCounts: a connection counts on the socket it was steered to
// from the handshake on (queued, then accepted), and stops counting when
// the worker closes it, not when only the client does (the worker still
// has it); nothing counts on the others.
func TestHeldCounts(t *testing.T) {
	for _, lo := range loopbacks(t) {
		t.Run(lo, func(t *testing.T) {
			g := loadAwareGroup(t, lo, 2)
			if err := g.Steer([]Target{{Slot: 1}}); err != nil {
				t.Fatal(err)
			}
			var cs []net.Conn
			for i := 0; i < 3; i++ {
				cs = append(cs, dialed(t, g.Addr()))
			}
			waitHeld(t, g, []int{0, 3}) // queued, not accepted
			w := startWorker(t, g.Fd(0, 1))
			waitFor(t, "3 accepted", func() (bool, string) { return w.accepted() == 3, fmt.Sprint(w.accepted()) })
			if h := heldOf(t, g, 2); h[0] != 0 || h[1] != 3 {
				t.Fatalf("accepted: held %v, want [0 3]", h)
			}
			// The client closes the first: still held. The worker
			// closes the second (its client still open): one less, so
			// the first did not count down. Then both close the rest.
			cs[0].Close()
			w.mu.Lock()
			unix.Close(w.conn[1])
			w.conn[1] = -1
			w.mu.Unlock()
			waitHeld(t, g, []int{0, 2})
			w.mu.Lock()
			unix.Close(w.conn[0])
			w.conn[0] = -1
			w.mu.Unlock()
			waitHeld(t, g, []int{0, 1})
			cs[1].Close()
			cs[2].Close()
			w.closeAll()
			waitHeld(t, g, []int{0, 0})
			if n, err := g.Held(1, 1); err != nil || n != 0 {
				t.Errorf("bank 1: held %d, %v", n, err)
			}
			// The master's probes are not counted.
			p, err := g.Dial(context.Background(), 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			waitFor(t, "the probe queued", func() (bool, string) {
				q, err := g.QueueLen(1, 0)
				return err == nil && q == 1, fmt.Sprint(q, err)
			})
			// A connection steered there after it counts; the probe
			// (established before) does not.
			if err := g.Steer([]Target{{Slot: 0, Bank: 1}}); err != nil {
				t.Fatal(err)
			}
			c := dialed(t, g.Addr())
			defer c.Close()
			waitFor(t, "the connection counted", func() (bool, string) {
				n, err := g.Held(1, 0)
				return err == nil && n > 0, fmt.Sprint(n, err)
			})
			if n, err := g.Held(1, 0); err != nil || n != 1 {
				t.Errorf("a probe counts: held %d, %v", n, err)
			}
		})
	}
}

// TestLeastHeldAvoidsBusy: a worker busy with one connection (it holds
// it and accepts nothing else, like gunicorn's sync worker on a slow
// request) gets no new connection while the others hold fewer; the
// others share the new ones.
func TestLeastHeldAvoidsBusy(t *testing.T) {
	for _, lo := range loopbacks(t) {
		t.Run(lo, func(t *testing.T) {
			const slots = 4
			g := loadAwareGroup(t, lo, slots)
			ws := make([]*worker, slots)
			for s := range ws {
				ws[s] = startWorker(t, g.Fd(0, s))
			}
			// Slot 1 takes a slow request and stops accepting.
			if err := g.Steer([]Target{{Slot: 1}}); err != nil {
				t.Fatal(err)
			}
			slow := dialed(t, g.Addr())
			defer slow.Close()
			waitFor(t, "the slow request accepted", func() (bool, string) {
				return ws[1].accepted() == 1, fmt.Sprint(ws[1].accepted())
			})
			ws[1].setBusy(true)
			if err := g.Steer(bank(slots, 0)); err != nil {
				t.Fatal(err)
			}
			waitHeld(t, g, []int{0, 1, 0, 0})

			// Short requests, one after the other: each is closed by
			// both sides before the next, so the others hold 0 and the
			// busy worker 1 at every SYN.
			for i := 0; i < 24; i++ {
				c := dialed(t, g.Addr())
				waitFor(t, "the request counted", func() (bool, string) {
					h := heldOf(t, g, slots)
					return sum(h) == 2, fmt.Sprintf("held %v", h)
				})
				if h := heldOf(t, g, slots); h[1] != 1 {
					t.Fatalf("request %d went to the busy worker: held %v", i, h)
				}
				on := -1
				waitFor(t, "the request accepted", func() (bool, string) {
					for s, w := range ws {
						if s != 1 && w.accepted() > 0 {
							on = s
						}
					}
					return on >= 0, "not yet"
				})
				c.Close()
				ws[on].closeAll()
				waitHeld(t, g, []int{0, 1, 0, 0})
			}
			// Keep-alive connections, one at a time: each goes to a
			// worker holding fewer than the busy one while there is
			// one, then the busy one takes its turn with the rest.
			for i := 0; i < 3; i++ {
				c := dialed(t, g.Addr())
				defer c.Close()
				// Nothing lands on the busy worker: the held count
				// of one of the others goes up.
				waitFor(t, "the connection counted", func() (bool, string) {
					h := heldOf(t, g, slots)
					return sum(h) == 2+i, fmt.Sprintf("held %v", h)
				})
				if h := heldOf(t, g, slots); h[1] != 1 {
					t.Fatalf("connection %d went to the busy worker: held %v", i, h)
				}
			}
			waitHeld(t, g, []int{1, 1, 1, 1})
			if q, err := g.QueueLen(0, 1); err != nil || q != 0 {
				t.Errorf("busy worker's queue: %d, %v", q, err)
			}
		})
	}
}

// TestKeepAliveBurstBalance: 64 keep-alive connections over 4 idle
// workers land 16 on each (least held with round-robin ties is the
// exact round robin when loads are equal), and Held says so.
func TestKeepAliveBurstBalance(t *testing.T) {
	for _, lo := range loopbacks(t) {
		t.Run(lo, func(t *testing.T) {
			const slots = 4
			g := loadAwareGroup(t, lo, slots)
			ws := make([]*worker, slots)
			for s := range ws {
				ws[s] = startWorker(t, g.Fd(0, s))
			}
			for i := 0; i < 64; i++ {
				c := dialed(t, g.Addr())
				defer c.Close()
				// The handshake is complete on the client's side; the
				// server's side is counted when it processed the ACK.
				waitFor(t, "the connection counted", func() (bool, string) {
					h := heldOf(t, g, slots)
					return sum(h) == i+1, fmt.Sprintf("held %v", h)
				})
			}
			waitFor(t, "64 accepted", func() (bool, string) {
				n := 0
				for _, w := range ws {
					n += w.accepted()
				}
				return n == 64, fmt.Sprint(n)
			})
			for s, w := range ws {
				if w.accepted() != 16 {
					t.Errorf("slot %d accepted %d of 64, want 16", s, w.accepted())
				}
			}
			if h := heldOf(t, g, slots); fmt.Sprint(h) != "[16 16 16 16]" {
				t.Errorf("held %v, want 16 each", h)
			}
		})
	}
}

// TestHeldNoLeak: a connection that never reaches a worker (queued on a
// socket nobody accepts on, then reset by its client; or closed by its
// client, then accepted and closed) and a handshake that never completes
// leave no count behind.
func TestHeldNoLeak(t *testing.T) {
	for _, lo := range loopbacks(t) {
		t.Run(lo, func(t *testing.T) {
			g := loadAwareGroup(t, lo, 2)
			if err := g.Steer([]Target{{Slot: 0}}); err != nil {
				t.Fatal(err)
			}
			// Queued, never accepted; the client resets it (linger 0).
			c := dialed(t, g.Addr())
			waitHeld(t, g, []int{1, 0})
			if err := c.(*net.TCPConn).SetLinger(0); err != nil {
				t.Fatal(err)
			}
			c.Close()
			waitHeld(t, g, []int{0, 0})
			// Queued, the client closes normally: held until a worker
			// accepts and closes it (the reset one may be gone).
			c = dialed(t, g.Addr())
			waitHeld(t, g, []int{1, 0})
			c.Close()
			acceptAll(t, g)
			waitHeld(t, g, []int{0, 0})

			// A handshake that never completes: a bare SYN from a port
			// no socket connects from, so the SYN-ACK is answered with
			// a reset. The selector saw it (a pending entry), nothing
			// counts it.
			sport := sendSYN(t, g)
			waitFor(t, "the SYN steered", func() (bool, string) {
				return hasPending(t, g, sport), "no pending entry"
			})
			if h := heldOf(t, g, 2); sum(h) != 0 {
				t.Errorf("a handshake that never completed counts: held %v", h)
			}
			// Counting goes on as before.
			c = dialed(t, g.Addr())
			waitHeld(t, g, []int{1, 0})
			c.Close()
			acceptAll(t, g)
			waitHeld(t, g, []int{0, 0})
		})
	}
}

// sendSYN sends a bare TCP SYN to the group's address from a raw socket
// and returns its source port: a port bound by a socket that neither
// listens nor connects, so the kernel answers the SYN-ACK with a reset
// and the handshake never completes.
func sendSYN(t *testing.T, g *Group) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dst := ap.Addr()
	family := unix.AF_INET
	if dst.Is6() {
		family = unix.AF_INET6
	}
	// Reserve the source port.
	hold, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(hold) })
	var bindTo, sendTo unix.Sockaddr
	if dst.Is6() {
		bindTo = &unix.SockaddrInet6{Addr: dst.As16()}
		sendTo = &unix.SockaddrInet6{Addr: dst.As16()}
	} else {
		bindTo = &unix.SockaddrInet4{Addr: dst.As4()}
		sendTo = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	if err := unix.Bind(hold, bindTo); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(hold)
	if err != nil {
		t.Fatal(err)
	}
	sport := sockaddrAddr(sa).(*net.TCPAddr).Port

	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], uint16(sport))
	binary.BigEndian.PutUint16(tcp[2:], ap.Port())
	binary.BigEndian.PutUint32(tcp[4:], 0x12345678) // sequence number
	tcp[12] = 5 << 4                                // header length: 5 words
	tcp[13] = 0x02                                  // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)     // window
	// Checksum over the pseudo-header (source and destination are the
	// same loopback address) and the header.
	var pseudo []byte
	addr := dst.AsSlice()
	pseudo = append(pseudo, addr...)
	pseudo = append(pseudo, addr...)
	if dst.Is6() {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(tcp)))
		pseudo = append(pseudo, 0, 0, 0, unix.IPPROTO_TCP)
	} else {
		pseudo = append(pseudo, 0, unix.IPPROTO_TCP)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(tcp)))
	}
	var sum uint32
	for _, b := range [][]byte{pseudo, tcp} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(tcp[16:], ^uint16(sum))

	raw, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Skipf("raw socket: %v", err)
	}
	defer unix.Close(raw)
	if err := unix.Sendto(raw, tcp, 0, sendTo); err != nil {
		t.Fatalf("send SYN: %v", err)
	}
	return sport
}

// hasPending reports whether the selector of g recorded a handshake from
// source port sport.
func hasPending(t *testing.T, g *Group, sport int) bool {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var k [tupleSize]byte
	var v uint32
	it := g.ebpf.pending.Iterate()
	found := false
	for it.Next(&k, &v) {
		if int(binary.NativeEndian.Uint16(k[tuplePort:])) == sport {
			found = true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// TestHeldHandover: a new master of this layout adopts the held maps, so
// connections established before the hand-over keep counting and are
// counted down once when they close, even while both masters' tracers
// are attached; its own tracer counts from then on.
func TestHeldHandover(t *testing.T) {
	for _, lo := range loopbacks(t) {
		t.Run(lo, func(t *testing.T) {
			old := loadAwareGroup(t, lo, 2)
			if err := old.Steer([]Target{{Slot: 0}}); err != nil {
				t.Fatal(err)
			}
			c1, c2 := dialed(t, old.Addr()), dialed(t, old.Addr())
			defer c1.Close()
			defer c2.Close()
			waitHeld(t, old, []int{2, 0})
			// A worker holds both, on its own copy of the socket: it
			// outlives the old master.
			wfd := dupAll(t, []int{old.Fd(0, 0)})[0]
			w := startWorker(t, wfd)
			defer unix.Close(wfd) // w is stopped before this returns
			waitFor(t, "2 accepted", func() (bool, string) { return w.accepted() == 2, fmt.Sprint(w.accepted()) })
			st, fds := old.Export()
			g, err := Import(st, dupAll(t, fds))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.Close() })
			if err := g.LoadAware(); err != nil {
				t.Fatalf("imported group not load-aware: %v", err)
			}
			waitHeld(t, g, []int{2, 0})
			// Both tracers attached: one close counts down once.
			w.mu.Lock()
			unix.Close(w.conn[0])
			w.conn[0] = -1
			w.mu.Unlock()
			waitHeld(t, g, []int{1, 0})
			waitHeld(t, old, []int{1, 0})
			old.Close()
			w.close()
			waitHeld(t, g, []int{0, 0})
			// The new master steers by its counts.
			if err := g.Steer(bank(2, 0)); err != nil {
				t.Fatal(err)
			}
			c3 := dialed(t, g.Addr())
			defer c3.Close()
			waitFor(t, "a new connection counted", func() (bool, string) {
				h := heldOf(t, g, 2)
				return sum(h) == 1, fmt.Sprintf("held %v", h)
			})
			acceptAll(t, g)
			waitHeld(t, g, []int{0, 0})
		})
	}
}

// TestHeldHandoverFromLayout2: a master of layout 2 had no held maps; the
// new one builds a new selector, whose counts start at 0 for connections
// made before (their close counts nothing down) and count the new ones.
func TestHeldHandoverFromLayout2(t *testing.T) {
	old := loadAwareGroup(t, "127.0.0.1", 2)
	if err := old.Steer([]Target{{Slot: 0}}); err != nil {
		t.Fatal(err)
	}
	before := dialed(t, old.Addr())
	defer before.Close()
	waitHeld(t, old, []int{1, 0})
	st, fds := old.Export()
	st.Layout = 2
	g, err := Import(st, dupAll(t, fds[:len(fds)-(ebpfFds-ebpfFdsV2)]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	old.Close()
	if g.Mechanism() != EBPF || g.Fallback() != nil || g.LoadAware() != nil {
		t.Fatalf("from layout 2: %s, fallback %v, load %v", g.Mechanism(), g.Fallback(), g.LoadAware())
	}
	if h := heldOf(t, g, 2); sum(h) != 0 {
		t.Fatalf("a rebuilt selector starts with held %v", h)
	}
	after := dialed(t, g.Addr())
	defer after.Close()
	waitHeld(t, g, []int{1, 0})
	// Both closed by the worker: only the new one counts down.
	if got := acceptAll(t, g); len(got) != 1 || len(got[Target{Slot: 0}]) != 2 {
		t.Errorf("accepted %v, want 2 on slot 0", got)
	}
	waitHeld(t, g, []int{0, 0})
}

// TestHeldUnsupported: classic BPF and UDP count nothing; Held says so
// rather than reporting zeros, and classic BPF steers over fewer targets
// as always.
func TestHeldUnsupported(t *testing.T) {
	c := newTestGroup(t, "tcp://127.0.0.1:0", 3, ModeSteer, CBPF)
	if c.LoadAware() == nil {
		t.Error("classic BPF claims to be load-aware")
	}
	if _, err := c.Held(0, 0); err == nil {
		t.Error("classic BPF: Held gave no error")
	}
	if err := c.Steer([]Target{{Slot: 2, Bank: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := connectAndCount(t, c, 6); got[Target{Slot: 2, Bank: 1}] != 6 {
		t.Errorf("classic BPF steered to one target: %v", got)
	}
	if os.Geteuid() != 0 {
		return
	}
	u := newTestGroup(t, "udp://127.0.0.1:0", 2, ModeSteer, EBPF)
	if u.LoadAware() == nil {
		t.Error("UDP claims to be load-aware")
	}
	if _, err := u.Held(0, 0); err == nil {
		t.Error("UDP: Held gave no error")
	}
	if _, err := loadAwareGroup(t, "127.0.0.1", 1).Held(0, 1); err == nil {
		t.Error("Held of a slot out of range gave no error")
	}
}

// inetSockSetStateFormat is sock:inet_sock_set_state's format on Linux
// 6.18 (x86-64).
const inetSockSetStateFormat = `name: inet_sock_set_state
ID: 2287
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:const void * skaddr;	offset:8;	size:8;	signed:0;
	field:int oldstate;	offset:16;	size:4;	signed:1;
	field:int newstate;	offset:20;	size:4;	signed:1;
	field:__u16 sport;	offset:24;	size:2;	signed:0;
	field:__u16 dport;	offset:26;	size:2;	signed:0;
	field:__u16 family;	offset:28;	size:2;	signed:0;
	field:__u16 protocol;	offset:30;	size:2;	signed:0;
	field:__u8 saddr[4];	offset:32;	size:4;	signed:0;
	field:__u8 daddr[4];	offset:36;	size:4;	signed:0;
	field:__u8 saddr_v6[16];	offset:40;	size:16;	signed:0;
	field:__u8 daddr_v6[16];	offset:56;	size:16;	signed:0;

print fmt: "family=%s ..."
`

// TestParseFormat: the tracer's field offsets come from the format file;
// a format without a field, or with a field of another size or
// misaligned, is refused (the tracer is then not loaded) rather than
// read wrong.
func TestParseFormat(t *testing.T) {
	off, err := parseFormat([]byte(inetSockSetStateFormat))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int16{"oldstate": 16, "newstate": 20, "sport": 24, "dport": 26, "protocol": 30, "saddr_v6": 40, "daddr_v6": 56}
	if fmt.Sprint(off) != fmt.Sprint(want) {
		t.Errorf("offsets %v, want %v", off, want)
	}
	for _, bad := range []struct{ from, to string }{
		{"field:__u16 protocol;\toffset:30;\tsize:2;", ""},
		{"field:__u16 sport;\toffset:24;\tsize:2;", "field:__u32 sport;\toffset:24;\tsize:4;"},
		{"field:__u8 daddr_v6[16];\toffset:56;", "field:__u8 daddr_v6[16];\toffset:58;"},
	} {
		f := strings.Replace(inetSockSetStateFormat, bad.from, bad.to, 1)
		if f == inetSockSetStateFormat {
			t.Fatalf("%q not in the format", bad.from)
		}
		if _, err := parseFormat([]byte(f)); err == nil {
			t.Errorf("accepted a format with %q instead of %q", bad.to, bad.from)
		}
	}
	if _, err := parseFormat([]byte("garbage\nfield:\nfield:x;offset:zz;\n")); err == nil {
		t.Error("accepted garbage")
	}
	if os.Geteuid() == 0 {
		if _, err := findTracepoint(); err != nil {
			t.Errorf("this kernel's tracepoint: %v", err)
		}
	}
}

// TestHeldWithoutTracer: a master whose tracer is gone (here: detached by
// the test; in life, one that failed to load it) steers plain round
// robin, not by counts nobody updates, and says so; a master taking over
// from it starts counting from zero instead of adopting the stale counts.
func TestHeldWithoutTracer(t *testing.T) {
	old := loadAwareGroup(t, "127.0.0.1", 2)
	if err := old.Steer([]Target{{Slot: 0}}); err != nil {
		t.Fatal(err)
	}
	c1, c2 := dialed(t, old.Addr()), dialed(t, old.Addr())
	defer c1.Close()
	defer c2.Close()
	waitHeld(t, old, []int{2, 0})

	old.mu.Lock()
	old.ebpf.tracer.close()
	old.ebpf.tracer = nil
	old.ebpf.noLoad = errors.New("detached by the test")
	old.mu.Unlock()
	if err := old.Steer(bank(2, 0)); err != nil {
		t.Fatal(err)
	}
	if old.LoadAware() == nil || old.Selection() != "round-robin" {
		t.Fatalf("without a tracer: load %v, selection %s", old.LoadAware(), old.Selection())
	}
	if _, err := old.Held(0, 0); err == nil {
		t.Error("Held without a tracer gave no error")
	}
	// Closed unseen: slot 0 stays at 2 in the map.
	acceptAll(t, old)
	// The stale counts do not send everything to slot 1.
	if got := connectAndCount(t, old, 8); got[Target{Slot: 0}] != 4 || got[Target{Slot: 1}] != 4 {
		t.Errorf("round robin without counts: %v, want 4 and 4", got)
	}

	st, fds := old.Export()
	g, err := Import(st, dupAll(t, fds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	old.Close()
	if err := g.LoadAware(); err != nil {
		t.Fatalf("the new master does not count: %v", err)
	}
	waitHeld(t, g, []int{0, 0})
	c3 := dialed(t, g.Addr())
	defer c3.Close()
	waitFor(t, "a new connection counted", func() (bool, string) {
		h := heldOf(t, g, 2)
		return sum(h) == 1, fmt.Sprintf("held %v", h)
	})
	acceptAll(t, g)
	waitHeld(t, g, []int{0, 0})
}

// TestNoBPFLoopFallback: on a kernel without bpf_loop (simulated) the
// selector is built without the least-held scan and steers exact round
// robin, counts nothing and says why; a master taking it over knows it
// from the program's name.
func TestNoBPFLoopFallback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("eBPF needs root")
	}
	testNoBPFLoop = true
	defer func() { testNoBPFLoop = false }()
	g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, EBPF)
	testNoBPFLoop = false
	if err := g.LoadAware(); err == nil || !strings.Contains(err.Error(), "bpf_loop") {
		t.Errorf("LoadAware: %v", err)
	}
	if s := g.Selection(); s != "round-robin" {
		t.Errorf("selection %q", s)
	}
	got := connectAndCount(t, g, 64)
	if lo, hi, s := spread(got, bank(4, 0)); lo != 16 || hi != 16 {
		t.Errorf("round robin without the scan: %s", s)
	}
	st, fds := g.Export()
	g2, err := Import(st, dupAll(t, fds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g2.Close() })
	if g2.Mechanism() != EBPF || g2.Fallback() != nil {
		t.Fatalf("imported: %s, %v", g2.Mechanism(), g2.Fallback())
	}
	if err := g2.LoadAware(); err == nil || !strings.Contains(err.Error(), "bpf_loop") {
		t.Errorf("imported LoadAware: %v", err)
	}
	if got := connectAndCount(t, g2, 8); got[Target{Slot: 0}]+got[Target{Slot: 1}]+got[Target{Slot: 2}]+got[Target{Slot: 3}] != 8 {
		t.Errorf("imported: %v", got)
	}
}
