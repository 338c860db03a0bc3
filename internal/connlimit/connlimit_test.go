package connlimit

import (
	"bufio"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
)

// recorder is a Limiter over ints that records what it evicts.
type recorder struct {
	mu      sync.Mutex
	evicted []int
}

func (r *recorder) evict(v int) {
	r.mu.Lock()
	r.evicted = append(r.evicted, v)
	r.mu.Unlock()
}

func (r *recorder) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evicted)
}

func TestEvictsTheLongestIdle(t *testing.T) {
	var r recorder
	l := New(3, r.evict)
	var conns []*Conn[int]
	for i := range 3 {
		c, evicted := l.Admit(i)
		if c == nil || evicted {
			t.Fatalf("admit %d under the cap: %v, evicted %v", i, c, evicted)
		}
		conns = append(conns, c)
	}
	// 0 has a request in hand; 1 is idle the longest, then 2.
	if conns[0].Busy() {
		t.Fatal("connection 0 evicted before any was")
	}
	c3, evicted := l.Admit(3)
	if c3 == nil || !evicted {
		t.Fatalf("admit at the cap: %v, evicted %v; want a place taken from an idle one", c3, evicted)
	}
	if got := r.got(); !slices.Equal(got, []int{1}) {
		t.Fatalf("evicted %v, want [1] (the longest idle)", got)
	}
	if !conns[1].Evicted() || conns[2].Evicted() {
		t.Fatalf("evicted flags: 1 %v, 2 %v", conns[1].Evicted(), conns[2].Evicted())
	}
	if n := l.Held(); n != 3 {
		t.Fatalf("held %d, want 3", n)
	}
	// The evicted one's release frees nothing: its place is 3's.
	conns[1].Release()
	if n := l.Held(); n != 3 {
		t.Fatalf("held %d after the evicted one's release, want 3", n)
	}
	// Its request completes after all: it is told it was evicted.
	if !conns[1].Busy() {
		t.Fatal("Busy on an evicted connection says it was not")
	}
	// 2 went idle before 3: it goes next.
	if _, evicted := l.Admit(4); !evicted {
		t.Fatal("admit at the cap did not evict")
	}
	if got := r.got(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("evicted %v, want [1 2]", got)
	}
	if n := l.Evicted(); n != 2 {
		t.Fatalf("Evicted() = %d, want 2", n)
	}
}

func TestIdleAgainIsTheNewest(t *testing.T) {
	var r recorder
	l := New(2, r.evict)
	a, _ := l.Admit(1)
	b, _ := l.Admit(2)
	// a serves a request and goes idle again (keep-alive): b is now the
	// longest idle.
	a.Busy()
	a.Idle()
	l.Admit(3)
	if got := r.got(); !slices.Equal(got, []int{2}) {
		t.Fatalf("evicted %v, want [2]", got)
	}
	// Idle does nothing to an evicted or released connection.
	b.Idle()
	a.Release()
	a.Idle()
	a.Release()
	if n := l.Held(); n != 1 {
		t.Fatalf("held %d, want 1 (3 only)", n)
	}
	if held, idle := l.Counts(); held != 1 || idle != 1 {
		t.Fatalf("counts: %d held, %d idle; want 1 and 1", held, idle)
	}
	var idle []int
	l.EachIdle(func(v int) { idle = append(idle, v) })
	if !slices.Equal(idle, []int{3}) {
		t.Fatalf("idle %v, want [3]", idle)
	}
}

func TestEveryOneBusyRefuses(t *testing.T) {
	var r recorder
	l := New(2, r.evict)
	a, _ := l.Admit(1)
	b, _ := l.Admit(2)
	a.Busy()
	b.Busy()
	select {
	case <-l.Changed(): // from nothing yet: drain a stale signal, if any
	default:
	}
	if c, _ := l.Admit(3); c != nil {
		t.Fatal("admitted at the cap with every connection busy")
	}
	if len(r.got()) != 0 {
		t.Fatalf("evicted %v, a busy connection", r.got())
	}
	b.Release()
	select {
	case <-l.Changed():
	default:
		t.Fatal("no Changed signal after a release")
	}
	if c, evicted := l.Admit(3); c == nil || evicted {
		t.Fatalf("admit after a release: %v, evicted %v", c, evicted)
	}
	a.Idle()
	select {
	case <-l.Changed():
	default:
		t.Fatal("no Changed signal after a connection went idle")
	}
}

func TestNewBoundsTheCap(t *testing.T) {
	l := New(0, func(int) {})
	if c, _ := l.Admit(1); c == nil {
		t.Fatal("a cap of 0 admits nothing; want at least 1")
	}
}

// Many clients at once: the held count never passes the cap, every
// eviction is of an idle connection, and all is given back at the end.
func TestConcurrent(t *testing.T) {
	const capN, clients, rounds = 4, 16, 200
	var (
		mu   sync.Mutex
		busy = map[int]bool{}
		bad  []int
	)
	l := New(capN, func(v int) {
		mu.Lock()
		if busy[v] {
			bad = append(bad, v)
		}
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			for i := range rounds {
				id := g*rounds + i
				c, _ := l.Admit(id)
				if c == nil {
					<-l.Changed()
					continue
				}
				if n := l.Held(); n > capN {
					t.Errorf("held %d, cap %d", n, capN)
				}
				if i%3 == 0 {
					c.Release() // connected and went away
					continue
				}
				mu.Lock()
				evicted := c.Busy()
				busy[id] = !evicted
				mu.Unlock()
				mu.Lock()
				busy[id] = false
				mu.Unlock()
				c.Idle()
				c.Release()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("evicted connections with a request in hand: %v", bad)
	}
	if n := l.Held(); n != 0 {
		t.Errorf("held %d after every connection was released", n)
	}
}

// On real sockets: idle clients holding every place do not keep out one
// that sends a request.
func TestSocketsIdleClientsDoNotLockOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const capN = 4
	l := New(capN, func(c net.Conn) { c.Close() })
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			lc, _ := l.Admit(c)
			if lc == nil {
				c.Close()
				continue
			}
			wg.Go(func() {
				defer lc.Release()
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				lc.Busy()
				io.WriteString(c, "ok "+line)
			})
		}
	})
	var idle []net.Conn
	for range 3 * capN {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "status\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "ok status\n" {
		t.Fatalf("reply %q, %v; want \"ok status\\n\"", got, err)
	}
	// The idle clients the server closed see EOF; at most the cap are
	// still held.
	closed := 0
	for _, ic := range idle[:2*capN] {
		if _, err := ic.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != 2*capN {
		t.Errorf("%d of the %d oldest idle clients closed, want all", closed, 2*capN)
	}
	if n := l.Held(); n > capN {
		t.Errorf("held %d, cap %d", n, capN)
	}
	ln.Close()
	for _, ic := range idle {
		ic.Close()
	}
}
