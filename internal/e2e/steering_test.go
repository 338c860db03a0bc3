//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// Steered connections, end to end.

// balances are the steered modes and mechanisms the tests cover, and the
// shared socket to compare with.
var balances = []struct {
	name  string
	flags []string
}{
	{"steer-ebpf", []string{"--balance", "steer", "--steer-bpf", "ebpf"}},
	{"steer-cbpf", []string{"--balance", "steer", "--steer-bpf", "cbpf"}},
	{"sticky-ebpf", []string{"--balance", "sticky", "--steer-bpf", "ebpf"}},
	{"sticky-cbpf", []string{"--balance", "sticky", "--steer-bpf", "cbpf"}},
	{"shared", []string{"--balance", "shared"}},
}

func needEBPF(t *testing.T, flags []string) {
	t.Helper()
	if os.Geteuid() != 0 && strings.Contains(strings.Join(flags, " "), "ebpf") {
		skipf(t, "eBPF steering needs root (or CAP_BPF and CAP_NET_ADMIN)")
	}
}

// A worker that calls plain http.Server.Shutdown at SIGTERM, with no drain
// window of its own (testapp's serve mode), loses requests at reload when
// it shares the socket: a connection accepted just before Shutdown, whose
// request is read just after, gets EOF. Steered, the master stops it only
// once its own socket's queue has been empty for a while: 20 reloads under
// strict clients (a new connection per request, never a retry) lose
// nothing. The shared figure is reported beside.
//
// The classic BPF variants run 5 reloads (the mechanism differs, not the
// drain); the others 20.
func TestSteerPlainShutdownLosesNothing(t *testing.T) {
	t.Parallel()
	results := map[string]string{}
	for _, b := range balances {
		reloads := 20
		if testing.Short() || strings.HasSuffix(b.name, "cbpf") {
			reloads = 5
		}
		t.Run(b.name, func(t *testing.T) {
			needEBPF(t, b.flags)
			flags := append([]string{"--workers", "2", "--min-uptime", "100ms", "--log-level", "info"}, b.flags...)
			m := startMaster(t, flags, bin.testapp, "-mode", "serve")
			m.waitServing(1, 2)
			l := startStrictNew(m.addr(), 4)
			defer l.stop()
			if !l.waitRequests(100, 20*time.Second) {
				t.Fatal("load is not getting answers")
			}
			for i := 1; i <= reloads; i++ {
				if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
					t.Fatalf("reload %d: exit %d %s%s", i, code, stdout, stderr)
				}
				if !l.waitRequests(50, 20*time.Second) {
					t.Fatalf("reload %d: load stalled", i)
				}
			}
			fails := l.stop()
			results[b.name] = fmt.Sprintf("%d of %d failed over %d reloads", len(fails), l.total.Load(), reloads)
			t.Logf("%s: %d requests over %d reloads, %d failed", b.name, l.total.Load(), reloads, len(fails))
			if b.name != "shared" && len(fails) > 0 {
				t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
			}
		})
	}
	t.Logf("plain Shutdown: %v", results)
}

// A worker that stops accepting and is then killed: the connections
// queued on its own socket are served by its replacement, none refused,
// and new connections go elsewhere meanwhile.
func TestSteerQueuedConnectionsServedByReplacement(t *testing.T) {
	for _, b := range balances[:2] {
		t.Run(b.name, func(t *testing.T) {
			needEBPF(t, b.flags)
			m := startMaster(t, append([]string{"--workers", "2"}, b.flags...), bin.testapp, "-mode", "serve")
			st := m.waitServing(1, 2)
			victim := st.Workers[0].PID
			if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			addr := m.addr()
			// Round-robin or by hash, some of these land on the stopped
			// worker's queue.
			type result struct {
				body string
				err  error
			}
			results := make(chan result, 20)
			for i := 0; i < 20; i++ {
				go func() {
					body, err := get(addr, "/")
					results <- result{body, err}
				}()
			}
			m.waitStatus(20*time.Second, "connections queued on the stopped worker", func(st workers.Status) bool {
				for _, w := range st.Workers {
					if w.PID == victim && w.Queue["http"] > 0 {
						return true
					}
				}
				return false
			})
			if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			slots := map[string]int{}
			for i := 0; i < 20; i++ {
				r := <-results
				if r.err != nil {
					t.Fatalf("request %d: %v", i, r.err)
				}
				slots[field(r.body, "slot")]++
			}
			st = m.waitServing(1, 2)
			if st.Workers[0].PID == victim || st.Workers[0].Restarts != 1 {
				t.Errorf("slot 0 after the kill: %+v", st.Workers[0])
			}
			t.Logf("answers by slot: %v", slots)
		})
	}
}

// Balance: 64 keep-alive connections opened in a burst over 4 workers.
// eBPF round-robin gives each worker exactly 16; hashing (classic BPF,
// the shared socket) is chance, and is only reported.
func TestSteerBalance(t *testing.T) {
	for _, b := range []struct {
		name  string
		flags []string
		exact bool
	}{
		{"steer-ebpf", balances[0].flags, true},
		{"steer-cbpf", balances[1].flags, false},
		{"shared", balances[4].flags, false},
	} {
		t.Run(b.name, func(t *testing.T) {
			needEBPF(t, b.flags)
			m := startMaster(t, append([]string{"--workers", "4"}, b.flags...), bin.testapp, "-mode", "serve")
			m.waitServing(1, 4)
			addr := m.addr()
			conns := make([]net.Conn, 64)
			for i := range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			perPid := map[string]int{}
			for _, c := range conns {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				var sb strings.Builder
				bufio.NewReader(resp.Body).WriteTo(&sb)
				resp.Body.Close()
				perPid[field(sb.String(), "pid")]++
			}
			var counts []int
			for _, n := range perPid {
				counts = append(counts, n)
			}
			sort.Ints(counts)
			t.Logf("%s: connections per worker %v", b.name, counts)
			if b.exact && (len(counts) != 4 || counts[0] != 16 || counts[3] != 16) {
				t.Errorf("round-robin gave %v, want 16 each", counts)
			}
		})
	}
}

// Sticky: each client address reaches one slot, connection after
// connection; across a reload it moves once, to the same slot of the new
// generation.
func TestSteerSticky(t *testing.T) {
	for _, b := range []int{2, 3} {
		flags := balances[b].flags
		t.Run(balances[b].name, func(t *testing.T) {
			needEBPF(t, flags)
			m := startMaster(t, append([]string{"--workers", "4", "--min-uptime", "100ms"}, flags...), bin.testapp, "-mode", "serve")
			m.waitServing(1, 4)
			addr := m.addr()
			slotOf := func(src int) map[string]bool {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}}
				seen := map[string]bool{}
				for i := 0; i < 10; i++ {
					c, err := d.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						t.Fatal(err)
					}
					var sb strings.Builder
					bufio.NewReader(resp.Body).WriteTo(&sb)
					c.Close()
					seen[field(sb.String(), "slot")+"/"+field(sb.String(), "generation")] = true
				}
				return seen
			}
			before := map[int]string{}
			distinct := map[string]bool{}
			for src := 2; src < 18; src++ {
				seen := slotOf(src)
				if len(seen) != 1 {
					t.Fatalf("client 127.0.0.%d reached %v", src, seen)
				}
				for k := range seen {
					before[src] = k
					distinct[k] = true
				}
			}
			if len(distinct) < 2 {
				t.Errorf("16 client addresses all reached %v", distinct)
			}
			if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
				t.Fatal(stderr)
			}
			for src := 2; src < 18; src++ {
				seen := slotOf(src)
				want := strings.Replace(before[src], "/1", "/2", 1)
				if len(seen) != 1 || !seen[want] {
					t.Errorf("client 127.0.0.%d reached %v after the reload, want %s (it reached %s before)", src, seen, want, before[src])
				}
			}
		})
	}
}
