package admin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/handoff-dev/handoff/workers"
)

// fakeSource is a supervisor in-process: the status it returns is the
// test's, and its loop can be made to hang.
type fakeSource struct {
	mu       sync.Mutex
	st       workers.Status
	aliveErr error
	block    chan struct{} // while open, Status and Alive hang
	calls    atomic.Int32  // Status calls made
}

func (f *fakeSource) set(st workers.Status) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

func (f *fakeSource) Status() workers.Status {
	f.calls.Add(1)
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeSource) Alive(ctx context.Context) error {
	f.mu.Lock()
	block, err := f.block, f.aliveErr
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return fmt.Errorf("supervision loop unresponsive: %w", ctx.Err())
		}
	}
	return err
}

// start serves s until the test ends, and returns its base URL.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	})
	return "http://" + s.Addr().String()
}

func newServer(t *testing.T, src Source, opts Options) *Server {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return FromListener(ln, src, hclog.NewNullLogger(), opts)
}

// fetch does one request on a new connection.
func fetch(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// scrape fetches /metrics and parses it with Prometheus' own parser.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, _, body := fetch(t, "GET", base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the one sample of family name whose labels
// include want (name=value pairs), and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		if !hasLabels(m, want...) {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want ...string) bool {
	have := map[string]string{}
	for _, l := range m.Label {
		have[l.GetName()] = l.GetValue()
	}
	for i := 0; i+1 < len(want); i += 2 {
		if v, ok := have[want[i]]; !ok || v != want[i+1] {
			return false
		}
	}
	return true
}

// count is how many samples family name has with labels want.
func count(fams map[string]*dto.MetricFamily, name string, want ...string) int {
	n := 0
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			if hasLabels(m, want...) {
				n++
			}
		}
	}
	return n
}

// richStatus has a bit of everything: two generations (a reload under
// way), a slot in backoff, a draining worker sharing a slot's socket, a
// steered TCP and a steered UDP listener, a shared one, counters and a
// failed last reload.
func richStatus(sharedAddr string) workers.Status {
	return workers.Status{
		PID: 4242, Phase: workers.MasterServing, Generation: 3, Serving: true,
		Reloading: 4, ReloadPending: true,
		Counters: workers.Counters{
			Restarts: map[string]int{"failed": 2, "killed": 1, "memory": 3, "someday": 9},
			Reloads:  map[string]int{"ok": 2, "failed": 1, "master_failed": 1},
		},
		Generations: []workers.GenerationStatus{
			{Generation: 3, Phase: workers.GenServing, Command: "/srv/app"},
			{Generation: 4, Phase: workers.GenProbation, Command: "/srv/app"},
		},
		Workers: []workers.WorkerStatus{
			{Slot: 0, Bank: 1, PID: 100, Generation: 3, State: workers.Ready, Queue: map[string]int{"http": 5, "dns": 1536}, RSS: 1 << 20, CPU: 1.5},
			{Slot: 1, Bank: 1, PID: 99, Generation: 3, State: workers.Draining, Queue: map[string]int{"http": 2, "dns": 0}, RSS: 3 << 20, CPU: 7},
			{Slot: 1, Bank: 1, PID: 101, Generation: 3, State: workers.Ready, Queue: map[string]int{"http": 0, "dns": 0}, RSS: 2 << 20, CPU: 0.25},
			{Slot: 0, PID: 200, Generation: 4, State: workers.Starting, Queue: map[string]int{"http": 7, "dns": 0}},
			{Slot: 1, Generation: 4, State: workers.Backoff, Restarts: 4, LastExit: "exit status 3 before ready", LastExitKind: "failed"},
		},
		LastReload: &workers.ReloadResult{Generation: 3, OK: false, Error: "slot 1: exited with status 3 before ready", Started: time.Unix(1700000000, 500000000)},
		Listeners: []workers.ListenerStatus{
			{Name: "http", Network: "tcp", Addr: "127.0.0.1:8080", Balance: "steer", Mechanism: "ebpf", Selection: "round-robin"},
			{Name: "dns", Network: "udp", Addr: "127.0.0.1:5353", Balance: "sticky", Mechanism: "cbpf", Selection: "client-address"},
			{Name: "legacy", Network: "tcp", Addr: sharedAddr, Balance: "shared"},
		},
	}
}

// TestMetricsEqualStatus checks every metric taken from a status
// snapshot against the snapshot, as Prometheus would read /metrics.
func TestMetricsEqualStatus(t *testing.T) {
	// A shared listener with three connections waiting in its accept
	// queue: the kernel counts them, not the test.
	shared, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", shared.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	raw, err := shared.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sharedFd int
	raw.Control(func(fd uintptr) { sharedFd = int(fd) })

	src := &fakeSource{}
	st := richStatus(shared.Addr().String())
	src.set(st)
	s := newServer(t, src, Options{Version: "v9.9", SharedSockets: map[string]int{"legacy": sharedFd}})
	base := start(t, s)
	s.Observe(workers.Event{Kind: workers.EventServing, Generation: 3, Status: st})
	fams := scrape(t, base)

	type sample struct {
		name   string
		labels []string
		want   float64
	}
	want := []sample{
		{"handoff_master_info", []string{"pid", "4242", "version", "v9.9"}, 1},
		{"handoff_master_phase", []string{"phase", "serving"}, 1},
		{"handoff_master_phase", []string{"phase", "stopping"}, 0},
		{"handoff_master_phase", []string{"phase", "handed over"}, 0},
		{"handoff_ready", nil, 1},
		{"handoff_serving_generation", nil, 3},
		{"handoff_reloading_generation", nil, 4},
		{"handoff_reload_pending", nil, 1},
		{"handoff_generation_phase", []string{"generation", "3", "phase", "serving"}, 1},
		{"handoff_generation_phase", []string{"generation", "4", "phase", "probation"}, 1},
		{"handoff_workers", []string{"state", "ready", "generation", "3"}, 2},
		{"handoff_workers", []string{"state", "draining", "generation", "3"}, 1},
		{"handoff_workers", []string{"state", "starting", "generation", "4"}, 1},
		{"handoff_workers", []string{"state", "backoff", "generation", "4"}, 1},
		{"handoff_worker_info", []string{"slot", "1", "generation", "4", "pid", "0", "state", "backoff"}, 1},
		{"handoff_worker_info", []string{"slot", "1", "generation", "3", "pid", "99", "state", "draining"}, 1},
		{"handoff_worker_resident_memory_bytes", []string{"slot", "0", "generation", "3", "pid", "100"}, 1 << 20},
		{"handoff_worker_resident_memory_bytes", []string{"slot", "1", "generation", "3", "pid", "99"}, 3 << 20},
		{"handoff_worker_resident_memory_bytes", []string{"slot", "1", "generation", "3", "pid", "101"}, 2 << 20},
		{"handoff_worker_cpu_seconds_total", []string{"slot", "0", "generation", "3", "pid", "100"}, 1.5},
		{"handoff_worker_cpu_seconds_total", []string{"slot", "1", "generation", "3", "pid", "101"}, 0.25},
		{"handoff_slot_last_exit", []string{"slot", "1", "generation", "4", "reason", "failed"}, 1},
		{"handoff_worker_restarts_total", []string{"reason", "failed"}, 2},
		{"handoff_worker_restarts_total", []string{"reason", "killed"}, 1},
		{"handoff_worker_restarts_total", []string{"reason", "exited"}, 0},
		{"handoff_worker_restarts_total", []string{"reason", "memory"}, 3},
		{"handoff_worker_restarts_total", []string{"reason", "someday"}, 9},
		{"handoff_reloads_total", []string{"result", "ok"}, 2},
		{"handoff_reloads_total", []string{"result", "failed"}, 1},
		{"handoff_reloads_total", []string{"result", "master_ok"}, 0},
		{"handoff_reloads_total", []string{"result", "master_failed"}, 1},
		{"handoff_rollbacks_total", []string{"kind", "workers"}, 1},
		{"handoff_rollbacks_total", []string{"kind", "master"}, 1},
		{"handoff_last_reload_success", nil, 0},
		{"handoff_last_reload_generation", nil, 3},
		{"handoff_last_reload_start_time_seconds", nil, 1700000000.5},
		{"handoff_listener_info", []string{"listener", "http", "network", "tcp", "addr", "127.0.0.1:8080", "balance", "steer", "mechanism", "ebpf", "selection", "round-robin"}, 1},
		{"handoff_listener_info", []string{"listener", "legacy", "balance", "shared", "mechanism", ""}, 1},
		// Steered TCP: a socket per slot and bank. Slot 1 of generation
		// 3 (bank 1) has a draining and a ready worker on one socket:
		// the first one listed counts.
		{"handoff_listener_queue_connections", []string{"listener", "http", "balance", "steer", "slot", "0", "bank", "1"}, 5},
		{"handoff_listener_queue_connections", []string{"listener", "http", "balance", "steer", "slot", "1", "bank", "1"}, 2},
		{"handoff_listener_queue_connections", []string{"listener", "http", "balance", "steer", "slot", "0", "bank", "0"}, 7},
		// Steered UDP: bytes, in a metric of its own.
		{"handoff_listener_queue_bytes", []string{"listener", "dns", "balance", "sticky", "slot", "0", "bank", "1"}, 1536},
		// Shared: one socket, measured by the kernel.
		{"handoff_listener_queue_connections", []string{"listener", "legacy", "balance", "shared", "slot", "", "bank", ""}, 3},
	}
	for _, w := range want {
		got, ok := value(fams, w.name, w.labels...)
		if !ok {
			t.Errorf("%s%v: missing", w.name, w.labels)
			continue
		}
		if got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
		}
	}
	// Absent: memory of a worker not sampled yet (as status --json
	// omits it), and anything for pid 0 but its info.
	for _, a := range []sample{
		{"handoff_worker_resident_memory_bytes", []string{"pid", "200"}, 0},
		{"handoff_worker_resident_memory_bytes", []string{"pid", "0"}, 0},
		{"handoff_listener_queue_connections", []string{"listener", "dns"}, 0},
		{"handoff_listener_queue_bytes", []string{"listener", "http"}, 0},
	} {
		if n := count(fams, a.name, a.labels...); n != 0 {
			t.Errorf("%s%v: %d samples, want none", a.name, a.labels, n)
		}
	}
	if n := count(fams, "handoff_listener_queue_connections", "listener", "http", "slot", "1", "bank", "1"); n != 1 {
		t.Errorf("slot 1 bank 1 of http: %d samples, want 1 (one socket)", n)
	}
	if n := count(fams, "handoff_workers"); n != 4 {
		t.Errorf("handoff_workers: %d samples, want 4 (state × generation present)", n)
	}
	for _, fam := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds"} {
		if fams[fam] == nil {
			t.Errorf("%s: missing (the Go and process collectors of the master)", fam)
		}
	}
	if src.calls.Load() != 1 {
		t.Errorf("%d Status calls for one scrape, want 1 (one snapshot per scrape)", src.calls.Load())
	}

	// Before any reload: no last_reload samples; before serving, 0.
	src.set(workers.Status{PID: 1, Phase: workers.MasterStarting, Generation: 1})
	fams = scrape(t, base)
	if n := count(fams, "handoff_last_reload_success"); n != 0 {
		t.Errorf("handoff_last_reload_success with no reload yet: %d samples", n)
	}
	if v, _ := value(fams, "handoff_serving_generation"); v != 0 {
		t.Errorf("handoff_serving_generation = %v while starting, want 0", v)
	}
	if v, _ := value(fams, "handoff_master_phase", "phase", "starting"); v != 1 {
		t.Errorf("handoff_master_phase{phase=starting} = %v, want 1", v)
	}
}

// TestLint runs Prometheus' metric linter over everything served.
func TestLint(t *testing.T) {
	src := &fakeSource{}
	src.set(richStatus("127.0.0.1:1"))
	s := newServer(t, src, Options{})
	defer s.ln.Close()
	s.ev.reloaded(workers.ReloadResult{OK: true, Serving: time.Second, Duration: 2 * time.Second})
	problems, err := testutil.GatherAndLint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestEventMetrics checks the histograms and counters fed by events.
func TestEventMetrics(t *testing.T) {
	src := &fakeSource{}
	s := newServer(t, src, Options{})
	base := start(t, s)
	s.Observe(workers.Event{Kind: workers.EventReloaded, Reload: &workers.ReloadResult{Generation: 2, OK: true, Serving: 300 * time.Millisecond, Duration: 1200 * time.Millisecond}})
	s.Observe(workers.Event{Kind: workers.EventReloaded, Reload: &workers.ReloadResult{Generation: 3, OK: false, Duration: 40 * time.Second}})
	s.Observe(workers.Event{Kind: workers.EventReloaded, Reload: &workers.ReloadResult{Generation: 4, OK: true, Master: true, Serving: 3 * time.Second, Duration: 7 * time.Second}})
	s.ControlRequest("status", true)
	s.ControlRequest("status", true)
	s.ControlRequest("reload", false)
	s.ControlRequest("rm -rf", false)

	fams := scrape(t, base)
	hist := func(name, result string) *dto.Histogram {
		for _, m := range fams[name].GetMetric() {
			if hasLabels(m, "result", result) {
				return m.Histogram
			}
		}
		t.Fatalf("%s{result=%q}: missing", name, result)
		return nil
	}
	for _, c := range []struct {
		name, result string
		n            uint64
		sum          float64
	}{
		{"handoff_reload_duration_seconds", "ok", 1, 1.2},
		{"handoff_reload_duration_seconds", "failed", 1, 40},
		{"handoff_reload_duration_seconds", "master_ok", 1, 7},
		{"handoff_reload_duration_seconds", "master_failed", 0, 0},
		{"handoff_reload_time_to_serving_seconds", "ok", 1, 0.3},
		{"handoff_reload_time_to_serving_seconds", "master_ok", 1, 3},
	} {
		h := hist(c.name, c.result)
		if h.GetSampleCount() != c.n || h.GetSampleSum() != c.sum {
			t.Errorf("%s{result=%q}: count %d sum %v, want %d and %v", c.name, c.result, h.GetSampleCount(), h.GetSampleSum(), c.n, c.sum)
		}
	}
	if n := count(fams, "handoff_reload_time_to_serving_seconds", "result", "failed"); n != 0 {
		t.Errorf("time to serving of a failed reload: %d samples, want none", n)
	}
	for _, c := range []struct {
		cmd, result string
		want        float64
	}{
		{"status", "ok", 2}, {"status", "error", 0}, {"reload", "error", 1}, {"reload", "ok", 0}, {"stop", "ok", 0}, {"other", "error", 1},
	} {
		if v, ok := value(fams, "handoff_control_requests_total", "command", c.cmd, "result", c.result); !ok || v != c.want {
			t.Errorf("handoff_control_requests_total{command=%q,result=%q} = %v (present %v), want %v", c.cmd, c.result, v, ok, c.want)
		}
	}
}

func TestReadyz(t *testing.T) {
	src := &fakeSource{}
	s := newServer(t, src, Options{})
	base := start(t, s)
	readyz := func(want int, why string) {
		t.Helper()
		code, _, body := fetch(t, "GET", base+"/readyz")
		if code != want || !strings.Contains(body, why) {
			t.Errorf("/readyz: %d %q, want %d and %q", code, body, want, why)
		}
	}
	twoReady := workers.Status{Phase: workers.MasterServing, Generation: 1, Serving: true, Workers: []workers.WorkerStatus{
		{Slot: 0, PID: 10, Generation: 1, State: workers.Ready}, {Slot: 1, PID: 11, Generation: 1, State: workers.Ready},
	}}
	readyz(503, "no generation serves yet")
	starting := twoReady
	starting.Serving, starting.Phase = false, workers.MasterStarting
	s.Observe(workers.Event{Kind: workers.EventChanged, Status: starting})
	readyz(503, "no generation serves yet")
	s.Observe(workers.Event{Kind: workers.EventServing, Generation: 1, Status: twoReady})
	readyz(200, "generation 1 serving, 2 workers ready")

	// Every worker dead or restarting: nothing accepts.
	down := twoReady
	down.Workers = []workers.WorkerStatus{{Slot: 0, Generation: 1, State: workers.Backoff}, {Slot: 1, PID: 12, Generation: 1, State: workers.Starting}}
	s.Observe(workers.Event{Kind: workers.EventChanged, Status: down})
	readyz(503, "no worker is ready")
	s.Observe(workers.Event{Kind: workers.EventChanged, Status: twoReady})
	readyz(200, "ready")

	// A keep-alive client (a load balancer's prober) sees the change on
	// its open connection, on the first request after SetStopping.
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	get := func() int {
		resp, err := c.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("/readyz before SetStopping: %d", code)
	}
	s.SetStopping()
	if code := get(); code != 503 {
		t.Errorf("/readyz on the first request after SetStopping: %d, want 503", code)
	}
	readyz(503, "stopping")
	// Nothing brings it back.
	s.Observe(workers.Event{Kind: workers.EventChanged, Status: twoReady})
	readyz(503, "stopping")
	if v, _ := value(scrape(t, base), "handoff_ready"); v != 0 {
		t.Errorf("handoff_ready = %v after SetStopping, want 0", v)
	}
}

func TestReadyzEvents(t *testing.T) {
	serving := workers.Status{Phase: workers.MasterServing, Generation: 1, Serving: true, Workers: []workers.WorkerStatus{{Slot: 0, PID: 10, Generation: 1, State: workers.Ready}}}
	for _, c := range []struct {
		name string
		ev   workers.Event
		why  string
	}{
		{"EventStopping", workers.Event{Kind: workers.EventStopping, Status: func() workers.Status { st := serving; st.Phase = workers.MasterStopping; return st }()}, "stopping"},
		{"stopping phase", workers.Event{Kind: workers.EventChanged, Status: func() workers.Status { st := serving; st.Phase = workers.MasterStopping; return st }()}, "stopping"},
		{"EventHandedOver", workers.Event{Kind: workers.EventHandedOver, Status: func() workers.Status { st := serving; st.Phase = workers.MasterHandedOver; return st }()}, "handed over to a new master"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t, &fakeSource{}, Options{})
			defer s.ln.Close()
			s.Observe(workers.Event{Kind: workers.EventServing, Generation: 1, Status: serving})
			if ok, why := s.ready(); !ok {
				t.Fatalf("not ready after EventServing: %s", why)
			}
			s.Observe(c.ev)
			if ok, why := s.ready(); ok || why != c.why {
				t.Errorf("after %s: ready %v (%s), want not ready: %s", c.name, ok, why, c.why)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	src := &fakeSource{}
	s := newServer(t, src, Options{AliveTimeout: 200 * time.Millisecond})
	base := start(t, s)
	if code, _, body := fetch(t, "GET", base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	src.mu.Lock()
	src.aliveErr = errors.New("supervision loop unresponsive: gone fishing")
	src.mu.Unlock()
	if code, _, body := fetch(t, "GET", base+"/healthz"); code != 503 || !strings.Contains(body, "gone fishing") {
		t.Errorf("/healthz with Alive failing: %d %q, want 503 and the error", code, body)
	}
	// A loop that never answers: 503 once the timeout is up.
	src.mu.Lock()
	src.aliveErr, src.block = nil, make(chan struct{})
	src.mu.Unlock()
	if code, _, body := fetch(t, "GET", base+"/healthz"); code != 503 || !strings.Contains(body, "deadline exceeded") {
		t.Errorf("/healthz with the loop hanging: %d %q, want 503", code, body)
	}
	src.mu.Lock()
	close(src.block)
	src.block = nil
	src.mu.Unlock()
	if code, _, _ := fetch(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz once the loop answers again: %d", code)
	}
}

// TestWedgedLoop: scrapes while the loop hangs fail after the status
// timeout, and share one pending snapshot instead of piling up.
func TestWedgedLoop(t *testing.T) {
	src := &fakeSource{block: make(chan struct{})}
	src.set(richStatus("127.0.0.1:1"))
	s := newServer(t, src, Options{StatusTimeout: 300 * time.Millisecond})
	base := start(t, s)
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = fetch(t, "GET", base+"/metrics")
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusInternalServerError {
			t.Errorf("scrape %d while the loop hangs: %d, want 500", i, c)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d Status calls in flight for 5 scrapes of a hung loop, want 1", n)
	}
	src.mu.Lock()
	close(src.block)
	src.block = nil
	src.mu.Unlock()
	if v, ok := value(scrape(t, base), "handoff_serving_generation"); !ok || v != 3 {
		t.Errorf("once the loop answers: handoff_serving_generation = %v (present %v), want 3", v, ok)
	}
}

func TestOnlyReads(t *testing.T) {
	src := &fakeSource{}
	s := newServer(t, src, Options{})
	base := start(t, s)
	for _, path := range []string{"/index.html", "/events/", "/metrics/", "/metricsx", "/reload", "/stop", "/debug/pprof/", "/healthz/x", "/READYZ"} {
		for _, method := range []string{"GET", "POST"} {
			if code, _, _ := fetch(t, method, base+path); code != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 404", method, path, code)
			}
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/", "/events"} {
		for _, method := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			code, h, _ := fetch(t, method, base+path)
			if code != http.StatusMethodNotAllowed || h.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d Allow %q, want 405 and Allow: GET, HEAD", method, path, code, h.Get("Allow"))
			}
		}
		code, _, body := fetch(t, "HEAD", base+path)
		if (code != 200 && code != 503) || body != "" {
			t.Errorf("HEAD %s: %d with %d bytes of body", path, code, len(body))
		}
	}
	// Query strings do not matter.
	if code, _, _ := fetch(t, "GET", base+"/healthz?verbose=1"); code != 200 {
		t.Errorf("GET /healthz?verbose=1: %d", code)
	}
}

func TestAddressInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().String()
	// What a new master would meet binding the address its predecessor
	// still listens on (Go sets SO_REUSEADDR, not SO_REUSEPORT).
	_, err = New(addr, &fakeSource{}, nil)
	if err == nil {
		t.Fatalf("New(%s) with the address in use: no error", addr)
	}
	want := "admin endpoint: cannot listen on " + addr + ": address already in use"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	for _, bad := range []string{"9100", "localhost", ""} {
		_, err := New(bad, &fakeSource{}, nil)
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("New(%q): %v, want one line naming the address", bad, err)
		}
	}
}

// TestConnCap: the server holds at most MaxConns connections; a new one
// evicts the one idle the longest.
func TestConnCap(t *testing.T) {
	src := &fakeSource{}
	s := newServer(t, src, Options{MaxConns: 2})
	start(t, s)
	addr := s.Addr().String()
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, "the server holding both connections", func() bool { return s.ln.open() == 2 })
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if code, _ := request(t, third, bufio.NewReader(third), "/healthz"); code != 200 {
		t.Errorf("third connection: %d, want 200", code)
	}
	// The oldest was evicted, the second kept.
	held[0].SetReadDeadline(time.Now().Add(probeWait))
	if _, err := held[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read on the oldest idle connection: %v, want EOF (evicted)", err)
	}
	if n := s.ln.open(); n != 2 {
		t.Errorf("%d connections held, want 2", n)
	}
	if n := s.ln.evicted(); n != 1 {
		t.Errorf("%d evicted, want 1", n)
	}
}

func TestErrorLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := hclog.New(&hclog.LoggerOptions{Output: &buf})
	r := newRateLog(l, time.Hour)
	for i := 0; i < 100; i++ {
		fmt.Fprintf(r, "http: TLS handshake error from 127.0.0.1:%d: EOF\n", 1000+i)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Errorf("100 errors in an hour gave %d log lines, want 1:\n%s", n, buf.String())
	}
	r.every = 0
	r.Println("one more")
	if !strings.Contains(buf.String(), "similar_lines_dropped=99") {
		t.Errorf("the next line does not count the 99 dropped:\n%s", buf.String())
	}
}

// TestHandOver runs an old and a new master's endpoints on one socket,
// as a self-upgrade does, with a client polling all along: the new one
// answers nothing before it serves, the old one nothing after it hands
// over, and no request fails.
func TestHandOver(t *testing.T) {
	oldSrc, newSrc := &fakeSource{}, &fakeSource{}
	serving := func(pid int) workers.Status {
		return workers.Status{PID: pid, Phase: workers.MasterServing, Generation: 1, Serving: true,
			Workers: []workers.WorkerStatus{{Slot: 0, PID: pid + 1, Generation: 1, State: workers.Ready}}}
	}
	oldSrc.set(serving(1000))
	newSrc.set(serving(2000))

	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File() // what tableflip passes on
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	old := FromListener(ln, oldSrc, nil, Options{})
	next := FromListener(ln2, newSrc, nil, Options{Inherited: true})
	old.Observe(workers.Event{Kind: workers.EventServing, Status: serving(1000)})
	base := "http://" + old.Addr().String()
	oldDone := make(chan error, 1)
	go func() { oldDone <- old.Serve(context.Background()) }()
	start(t, next)

	// A client polls the endpoint all along and records, for each
	// request, when it started and which master answered.
	type answer struct {
		at  time.Time
		who string
	}
	var (
		mu      sync.Mutex
		answers []answer
		fails   []string
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for {
			select {
			case <-stop:
				return
			default:
			}
			at := time.Now()
			resp, err := c.Get(base + "/metrics")
			a := answer{at: at}
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != 200:
					err = errors.New(resp.Status)
				case bytes.Contains(b, []byte(`handoff_master_info{pid="1000"`)):
					a.who = "old"
				case bytes.Contains(b, []byte(`handoff_master_info{pid="2000"`)):
					a.who = "new"
				}
			}
			mu.Lock()
			if err != nil {
				fails = append(fails, err.Error())
			} else {
				answers = append(answers, a)
			}
			mu.Unlock()
		}
	}()
	// count counts the answers from who to requests started after since.
	count := func(who string, since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range answers {
			if a.who == who && !a.at.Before(since) {
				n++
			}
		}
		return n
	}
	waitAnswers := func(who string, since time.Time, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for count(who, since) < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d answers from the %s master", count(who, since), who)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Before the new master serves, only the old one answers.
	begin := time.Now()
	waitAnswers("old", begin, 20)
	if n := count("new", begin); n != 0 {
		t.Errorf("the new master answered %d times before it served", n)
	}

	next.Observe(workers.Event{Kind: workers.EventServing, Status: serving(2000)})
	handedOver := serving(1000)
	handedOver.Phase = workers.MasterHandedOver
	old.Observe(workers.Event{Kind: workers.EventHandedOver, Status: handedOver})
	// The old master's Serve returns once the requests it had accepted
	// are answered; from then on only the new one can answer.
	select {
	case err := <-oldDone:
		if err != nil {
			t.Errorf("old master's Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the old master's Serve did not return after the hand-over")
	}
	after := time.Now()
	waitAnswers("new", after, 20)
	if n := count("old", after); n != 0 {
		t.Errorf("the old master answered %d requests made after it handed over", n)
	}
	close(stop)
	<-done
	if len(fails) > 0 {
		t.Errorf("%d requests failed across the hand-over, first: %s", len(fails), fails[0])
	}
}
