package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// answer is what one response of examples/hello or examples/node said.
type answer struct {
	PID        int
	Slot       string
	Generation int // 0 if not a number ("-")
	Version    string
}

// parseAnswer parses "pid=1 slot=0 generation=2 version=v1".
func parseAnswer(b []byte) (answer, bool) {
	var a answer
	ok := false
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			n, err := strconv.Atoi(v)
			if err != nil {
				return a, false
			}
			a.PID, ok = n, true
		case "slot":
			a.Slot = v
		case "generation":
			a.Generation, _ = strconv.Atoi(v)
		case "version":
			a.Version = v
		}
	}
	return a, ok
}

// loadResult is the outcome of one load run, from either tool.
type loadResult struct {
	Tool     string
	Requests int64
	Failed   int64
	Duration time.Duration
	// RPS is successful requests per second.
	RPS float64
	P50 time.Duration
	P99 time.Duration
	// Errors counts failures by kind (a short, address-free text).
	Errors map[string]int64
	// PerPID counts successful responses by the pid that answered (when
	// counted).
	PerPID map[int]int64
	// Failures are the first failed requests, when they were sent and
	// why (vegeta only).
	Failures []failure
	// LastVersion and LastGeneration are those of the last successful
	// response (vegeta only).
	LastVersion    string
	LastGeneration int
	// Start is when the run began; OKPer and FailedPer count requests by
	// when they completed, per vegetaOpts.Bucket from Start (vegeta only,
	// when asked for).
	Start            time.Time
	OKPer, FailedPer []int
}

// failure is one failed request.
type failure struct {
	At   time.Time
	Kind string
}

// maxFailures bounds the failures a run keeps.
const maxFailures = 50

// vegetaOpts describe a fixed-rate run.
type vegetaOpts struct {
	URL       string
	Rate      int
	Duration  time.Duration // 0: until stop is closed (bounded by MaxDuration)
	KeepAlive bool
	// MaxDuration bounds a run that waits for stop.
	MaxDuration time.Duration
	// Bucket, if set, makes the run count answered and failed requests
	// per Bucket of time, by when they completed (loadResult's OKPer and
	// FailedPer).
	Bucket time.Duration
}

// runVegeta attacks URL at a fixed rate. Requests are POSTs with an empty
// body: Go's HTTP transport silently retries a GET that failed on a reused
// keep-alive connection, which would hide exactly the failures a reload
// under keep-alive can cause; it does not retry a POST, so every lost
// request is counted. Both example apps answer any method.
func runVegeta(ctx context.Context, o vegetaOpts, stop <-chan struct{}) (loadResult, error) {
	if o.Rate <= 0 {
		return loadResult{}, fmt.Errorf("vegeta: rate %d: want a positive rate", o.Rate)
	}
	du := o.Duration
	if du <= 0 && o.MaxDuration <= 0 {
		return loadResult{}, errors.New("vegeta: neither a duration nor a bound")
	}
	atk := vegeta.NewAttacker(
		vegeta.KeepAlive(o.KeepAlive),
		vegeta.Timeout(10*time.Second),
		vegeta.Workers(16),
		vegeta.MaxWorkers(2000),
		vegeta.Redirects(vegeta.NoFollow),
		vegeta.MaxBody(4096),
	)
	tr := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodPost, URL: o.URL})
	pacer := vegeta.ConstantPacer{Freq: o.Rate, Per: time.Second}
	bound := du
	if bound <= 0 {
		bound = o.MaxDuration
	}
	t0 := time.Now()
	res := atk.Attack(tr, pacer, bound, "bench")
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		case <-finished:
		}
		atk.Stop()
	}()

	out := loadResult{Tool: "vegeta", Errors: map[string]int64{}, PerPID: map[int]int64{}, Start: t0}
	maxBucket := 0
	if o.Bucket > 0 {
		maxBucket = int((bound+15*time.Second)/o.Bucket) + 1
	}
	count := func(per *[]int, r *vegeta.Result) {
		if o.Bucket <= 0 {
			return
		}
		i := min(max(int(r.Timestamp.Add(r.Latency).Sub(t0)/o.Bucket), 0), maxBucket)
		for len(out.OKPer) <= i {
			out.OKPer, out.FailedPer = append(out.OKPer, 0), append(out.FailedPer, 0)
		}
		(*per)[i]++
	}
	var m vegeta.Metrics
	for r := range res {
		m.Add(r)
		out.Requests++
		if r.Error != "" || r.Code != http.StatusOK {
			count(&out.FailedPer, r)
			kind := classifyError(r.Error, r.Code)
			out.Failed++
			out.Errors[kind]++
			if len(out.Failures) < maxFailures {
				out.Failures = append(out.Failures, failure{At: r.Timestamp, Kind: kind})
			}
			continue
		}
		if a, ok := parseAnswer(r.Body); ok {
			count(&out.OKPer, r)
			out.PerPID[a.PID]++
			out.LastVersion, out.LastGeneration = a.Version, a.Generation
		} else {
			count(&out.FailedPer, r)
			out.Failed++
			out.Errors["malformed body"]++
		}
	}
	m.Close()
	out.Duration = m.Duration + m.Wait
	if out.Duration > 0 {
		out.RPS = float64(out.Requests-out.Failed) / out.Duration.Seconds()
	}
	out.P50, out.P99 = m.Latencies.P50, m.Latencies.P99
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, nil
}

// classifyError turns a client error into a short kind without addresses.
func classifyError(e string, code uint16) string {
	switch {
	case e == "" || (code != 0 && strings.HasPrefix(e, strconv.Itoa(int(code)))):
		return fmt.Sprintf("HTTP %d", code)
	case strings.Contains(e, "connection refused"):
		return "connection refused"
	case strings.Contains(e, "connection reset"):
		return "connection reset"
	case strings.Contains(e, "broken pipe"):
		return "broken pipe"
	case strings.HasSuffix(e, "EOF"):
		return "EOF"
	case strings.Contains(e, "timeout") || strings.Contains(e, "deadline exceeded"):
		return "timeout"
	}
	if i := strings.LastIndex(e, ": "); i >= 0 {
		return e[i+2:]
	}
	return e
}

// wrkOpts describe a saturation run.
type wrkOpts struct {
	URL         string
	Threads     int
	Connections int
	Duration    time.Duration // as given to wrk -d; stop may end it sooner
	KeepAlive   bool
	// CountPIDs makes wrk parse every response for the pid (slower).
	CountPIDs bool
}

// The wrk script prints one JSON line of totals when wrk is done, so the
// bench does not parse wrk's human output. With count_pids it also counts
// responses per pid in each thread and adds them up.
const wrkScript = `
local threads = {}
counts = {}
function setup(thread)
  table.insert(threads, thread)
end
if os.getenv("BENCH_COUNT_PIDS") == "1" then
  function response(status, headers, body)
    if status == 200 then
      local pid = string.match(body, "pid=(%d+)")
      if pid then counts[pid] = (counts[pid] or 0) + 1 end
    end
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  local per = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then
      for pid, n in pairs(c) do per[pid] = (per[pid] or 0) + n end
    end
  end
  local parts = {}
  for pid, n in pairs(per) do table.insert(parts, string.format('"%s":%d', pid, n)) end
  io.write(string.format('BENCH-WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"per_pid":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ",")))
end
`

// wrkRunner runs wrk with the bench's script.
type wrkRunner struct {
	path   string // the wrk binary
	script string // the script file
	reg    *registry
	runs   atomic.Int64 // numbers each run's log
}

func newWrkRunner(reg *registry, dir string) (*wrkRunner, error) {
	p, err := exec.LookPath("wrk")
	if err != nil {
		return nil, fmt.Errorf("wrk not found (run bench/setup.sh): %w", err)
	}
	script := filepath.Join(dir, "bench.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, fmt.Errorf("wrk script: %w", err)
	}
	return &wrkRunner{path: p, script: script, reg: reg}, nil
}

// run runs wrk until its duration is over or stop is closed (wrk stops
// cleanly and reports on SIGINT).
func (w *wrkRunner) run(ctx context.Context, o wrkOpts, stop <-chan struct{}) (loadResult, error) {
	if w == nil {
		return loadResult{}, errors.New("wrk is not available (run bench/setup.sh)")
	}
	secs := int(o.Duration.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{w.path, "-t", strconv.Itoa(max(o.Threads, 1)), "-c", strconv.Itoa(max(o.Connections, 1)),
		"-d", strconv.Itoa(secs) + "s", "--timeout", "5s", "-s", w.script}
	if !o.KeepAlive {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, o.URL)
	env := []string{"BENCH_COUNT_PIDS=0"}
	if o.CountPIDs {
		env[0] = "BENCH_COUNT_PIDS=1"
	}
	// A log of its own: with a shared one, a run that printed no summary
	// would be read as the last run's, and so would a run next to
	// another (the smoke runs parts at once).
	p, err := w.reg.start(fmt.Sprintf("wrk-%d", w.runs.Add(1)), args, env)
	if err != nil {
		return loadResult{}, err
	}
	// Bound the run: wrk's own -d, plus a margin, whatever happens.
	limit := time.NewTimer(time.Duration(secs)*time.Second + 15*time.Second)
	defer limit.Stop()
	select {
	case <-p.done:
	case <-stop:
		_ = p.signal(syscall.SIGINT)
	case <-ctx.Done():
		_ = p.signal(syscall.SIGINT)
	case <-limit.C:
		_ = p.signal(syscall.SIGINT)
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.stop(syscall.SIGKILL, 0)
		return loadResult{}, errors.New("wrk did not stop")
	}
	if ctx.Err() != nil {
		return loadResult{}, ctx.Err()
	}
	return parseWrk(p.logPath)
}

func parseWrk(logPath string) (loadResult, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk output: %w", err)
	}
	i := bytes.LastIndex(b, []byte("BENCH-WRK "))
	if i < 0 {
		return loadResult{}, fmt.Errorf("wrk printed no summary: %s", lastLines(b, 5))
	}
	line := b[i+len("BENCH-WRK "):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var s struct {
		Requests   int64            `json:"requests"`
		DurationUS int64            `json:"duration_us"`
		Connect    int64            `json:"connect"`
		Read       int64            `json:"read"`
		Write      int64            `json:"write"`
		Status     int64            `json:"status"`
		Timeout    int64            `json:"timeout"`
		P50US      int64            `json:"p50_us"`
		P99US      int64            `json:"p99_us"`
		PerPID     map[string]int64 `json:"per_pid"`
	}
	if err := json.Unmarshal(line, &s); err != nil {
		return loadResult{}, fmt.Errorf("wrk summary %q: %w", line, err)
	}
	r := loadResult{
		Tool:     "wrk",
		Requests: s.Requests,
		Duration: time.Duration(s.DurationUS) * time.Microsecond,
		P50:      time.Duration(s.P50US) * time.Microsecond,
		P99:      time.Duration(s.P99US) * time.Microsecond,
		Errors:   map[string]int64{},
		PerPID:   map[int]int64{},
	}
	for k, v := range map[string]int64{"connect": s.Connect, "read": s.Read, "write": s.Write, "status": s.Status, "timeout": s.Timeout} {
		if v > 0 {
			r.Errors[k] = v
			r.Failed += v
		}
	}
	// wrk counts a request only once its response is complete; connect,
	// read and write errors are failures on top of those, status errors are
	// among them, and timeouts are requests still unanswered at --timeout.
	r.Requests += s.Connect + s.Read + s.Write + s.Timeout
	if r.Duration > 0 {
		r.RPS = float64(s.Requests-s.Status) / r.Duration.Seconds()
	}
	for k, v := range s.PerPID {
		if pid, err := strconv.Atoi(k); err == nil {
			r.PerPID[pid] = v
		}
	}
	return r, nil
}

// errorSummary renders an error map as "3 connection reset, 1 EOF".
func errorSummary(m map[string]int64) string {
	if len(m) == 0 {
		return "–"
	}
	type kv struct {
		k string
		v int64
	}
	var s []kv
	for k, v := range m {
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool {
		if s[i].v != s[j].v {
			return s[i].v > s[j].v
		}
		return s[i].k < s[j].k
	})
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = fmt.Sprintf("%d %s", x.v, x.k)
	}
	return strings.Join(parts, ", ")
}

// probe sends one request on a new connection and parses the answer.
func probe(ctx context.Context, url string, timeout time.Duration) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	a, ok := parseAnswer(b)
	if !ok {
		return answer{}, fmt.Errorf("malformed answer %q", b)
	}
	return a, nil
}

var probeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// waitAnswering polls url until it answers, at most timeout.
func waitAnswering(ctx context.Context, url string, timeout time.Duration, dead <-chan struct{}) (answer, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		a, err := probe(ctx, url, time.Second)
		if err == nil {
			return a, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return answer{}, ctx.Err()
		case <-dead:
			return answer{}, errors.New("process exited")
		case <-time.After(time.Millisecond):
		}
	}
	return answer{}, fmt.Errorf("%s not answering within %s: %w", url, timeout, last)
}

// freePort finds a free port on 127.0.0.1 for a server that binds it
// itself, a moment later. It picks ports at random below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), where no outgoing
// connection gets its port: a port 0 pick is in that range, and on a
// machine where other programs' tests open connections all the time, a
// client socket was seen taking it before node bound it (EADDRINUSE).
// Only if none of those is free does it fall back to port 0.
func freePort() (int, error) {
	low := ephemeralLow()
	for range 50 {
		if low <= freePortMin {
			break
		}
		p := freePortMin + rand.IntN(low-freePortMin)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortMin is the lowest port freePort picks: below it are the
// ports services are commonly configured on.
const freePortMin = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, or 0
// if unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return n
}
