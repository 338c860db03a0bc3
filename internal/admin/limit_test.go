package admin

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// probeWait bounds a probe's wait in these tests: a failure bound, far
// above what an answer takes on a loaded machine.
const probeWait = 10 * time.Second

// waitFor polls cond until it holds, failing the test after probeWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(probeWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, probeWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// request sends a GET on c and reads the answer, within probeWait.
func request(t *testing.T, c net.Conn, r *bufio.Reader, path string) (int, string) {
	t.Helper()
	code, body, err := get(c, r, path)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// get is request for another goroutine than the test's.
func get(c net.Conn, r *bufio.Reader, path string) (int, string, error) {
	c.SetDeadline(time.Now().Add(probeWait))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: admin\r\n\r\n", path); err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: body: %w", path, err)
	}
	return resp.StatusCode, string(b), nil
}

func servingStatus() workers.Status {
	return workers.Status{PID: 1000, Phase: workers.MasterServing, Generation: 1, Serving: true,
		Workers: []workers.WorkerStatus{{Slot: 0, PID: 1001, Generation: 1, State: workers.Ready}}}
}

// TestIdleConnsDoNotStarveProbes: hundreds of connections that send
// nothing, or half a request header, do not keep /healthz and /readyz
// from answering, and the server holds a bounded number of goroutines
// for them.
func TestIdleConnsDoNotStarveProbes(t *testing.T) {
	src := &fakeSource{}
	src.set(servingStatus())
	s := newServer(t, src, Options{})
	s.Observe(workers.Event{Kind: workers.EventServing, Status: servingStatus()})
	base := start(t, s)
	addr := s.Addr().String()
	before := runtime.NumGoroutine()

	const idle = 200
	for i := 0; i < idle; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		defer c.Close()
		if i%2 == 1 {
			// Slowloris: a header begun, never finished.
			fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: adm")
		}
	}
	client := &http.Client{Timeout: probeWait, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s with %d idle connections open: %v", path, idle, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s with %d idle connections open: %s, want 200", path, idle, resp.Status)
		}
	}
	// The probes came after the idle connections in the backlog: all
	// were accepted, and all but a cap's worth closed.
	if n := s.ln.evicted(); n < idle-DefaultMaxConns {
		t.Errorf("%d idle connections evicted, want at least %d", n, idle-DefaultMaxConns)
	}
	if n := s.ln.open(); n > DefaultMaxConns {
		t.Errorf("%d connections held, want at most %d", n, DefaultMaxConns)
	}
	// A goroutine per connection held (two while a request is served),
	// and slack for the client's and the runtime's.
	bound := before + 2*DefaultMaxConns + 16
	waitFor(t, fmt.Sprintf("goroutines down to %d", bound), func() bool { return runtime.NumGoroutine() <= bound })
	if v, ok := value(scrape(t, base), "handoff_admin_connections_evicted_total"); !ok || v < idle-DefaultMaxConns {
		t.Errorf("handoff_admin_connections_evicted_total = %v (present %v), want at least %d", v, ok, idle-DefaultMaxConns)
	}
}

// TestBusyConnsNotEvicted: a connection in the middle of a request
// keeps its slot; a new one waits until a connection is idle again (a
// keep-alive connection between requests), then takes its place.
func TestBusyConnsNotEvicted(t *testing.T) {
	src := &fakeSource{block: make(chan struct{})}
	src.set(servingStatus())
	s := newServer(t, src, Options{MaxConns: 1, AliveTimeout: time.Hour})
	s.Observe(workers.Event{Kind: workers.EventServing, Status: servingStatus()})
	start(t, s)
	addr := s.Addr().String()

	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyR := bufio.NewReader(busy)
	type answer struct {
		code int
		body string
		err  error
	}
	busyDone := make(chan answer, 1)
	go func() {
		code, body, err := get(busy, busyR, "/healthz") // hangs in Alive
		busyDone <- answer{code, body, err}
	}()
	waitFor(t, "the first request in its handler", func() bool {
		held, idle := s.ln.conns.Counts()
		return held == 1 && idle == 0
	})

	next, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	nextDone := make(chan answer, 1)
	go func() {
		code, body, err := get(next, bufio.NewReader(next), "/readyz")
		nextDone <- answer{code, body, err}
	}()

	src.mu.Lock()
	close(src.block)
	src.block = nil
	src.mu.Unlock()
	if a := <-busyDone; a.err != nil || a.code != 200 || a.body != "ok\n" {
		t.Errorf("the busy connection's request: %d %q %v, want 200 ok", a.code, a.body, a.err)
	}
	if a := <-nextDone; a.err != nil || a.code != 200 || !strings.HasPrefix(a.body, "ready") {
		t.Errorf("the waiting connection's request: %d %q %v, want 200 ready", a.code, a.body, a.err)
	}
	// The first connection, idle once answered, gave its slot up.
	if n := s.ln.evicted(); n != 1 {
		t.Errorf("%d connections evicted, want 1 (the first, once idle)", n)
	}
	busy.SetReadDeadline(time.Now().Add(probeWait))
	if _, err := busyR.ReadByte(); err != io.EOF {
		t.Errorf("read on the evicted connection: %v, want EOF", err)
	}
}

// TestLogLinesDroppedMetric: Options.LogLinesDropped feeds
// handoff_log_lines_dropped_total at each scrape; without it the metric
// is absent.
func TestLogLinesDroppedMetric(t *testing.T) {
	src := &fakeSource{}
	src.set(servingStatus())
	var n atomic.Uint64
	base := start(t, newServer(t, src, Options{LogLinesDropped: n.Load}))
	if v, ok := value(scrape(t, base), "handoff_log_lines_dropped_total"); !ok || v != 0 {
		t.Errorf("handoff_log_lines_dropped_total = %v (present %v), want 0", v, ok)
	}
	n.Store(42)
	if v, ok := value(scrape(t, base), "handoff_log_lines_dropped_total"); !ok || v != 42 {
		t.Errorf("handoff_log_lines_dropped_total = %v (present %v), want 42", v, ok)
	}
	base = start(t, newServer(t, src, Options{}))
	if _, ok := value(scrape(t, base), "handoff_log_lines_dropped_total"); ok {
		t.Errorf("handoff_log_lines_dropped_total present without Options.LogLinesDropped")
	}
}
