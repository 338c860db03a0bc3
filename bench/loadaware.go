package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Part 11, load (issue 16: load-aware steering). Steering deals each new
// connection to one worker's own socket whether or not that worker is
// free; one shared socket lets whichever worker is free take it. Two
// cases where that matters:
//
//   - slow requests on single-threaded workers (gunicorn's sync worker,
//     Node): a fast request dealt to a worker busy with a slow one waits
//     for it;
//   - a hung worker (SIGSTOP): the connections dealt to it wait until
//     the client gives up.

// The goals for steer, from issue 16.
const (
	// loadP99Factor: steer's fast p99 at most this times shared's.
	loadP99Factor = 1.5
	// loadP99Max: and below this, whatever shared's is.
	loadP99Max = 50 * time.Millisecond
	// loadRPSGoal: steer's fast requests at least this share of shared's.
	loadRPSGoal = 0.9
	// hangRecovered: throughput after a hang counts as recovered from
	// the second from which it stays at this share of the level before.
	hangRecovered = 0.7
)

// The load of the part.
const (
	// fastClients send the fast requests while one client loops on the
	// slow path.
	fastClients = 2
	// hangClients load the workers of which one hangs.
	hangClients = 8
	// hangTimeout is the client's patience with one request after a
	// hang, connect to answer; no request is retried.
	hangTimeout = 10 * time.Second
)

// slowAppDir is the directory of the apps with a slow path, in the
// repository.
func (e *env) slowAppDir() string { return filepath.Join(e.root, "bench", "apps", "slow") }

// gunicornPython finds a python3 that can run gunicorn: the one on PATH,
// else Debian's (a pyenv or virtualenv python3 on PATH does not see
// Debian's packages). "" if none.
func gunicornPython() string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import gunicorn").Run() == nil {
			return p
		}
	}
	return ""
}

// The sides of the part.

func (b *bench) handoffGunicornSlow(n int, mode balanceMode, py string) side {
	name := fmt.Sprintf("handoff + gunicorn sync (%d), %s", n, mode.name)
	s := side{name: name, start: func(ctx context.Context) (server, error) {
		cmd := []string{py, "-m", "gunicorn", "--chdir", b.e.slowAppDir(), "--workers", "1", "--preload",
			"--graceful-timeout", "5", "slowapp:app"}
		return b.e.startHandoff(ctx, name, n, "notify", mode, cmd, b.slowEnv())
	}}
	if py == "" {
		s.unavailable = "no python3 here can import gunicorn (bash examples/install-runtimes.sh)"
	}
	return s
}

func (b *bench) handoffNodeSlow(n int, mode balanceMode) side {
	name := fmt.Sprintf("handoff + node (%d), %s", n, mode.name)
	return side{name: name, start: func(ctx context.Context) (server, error) {
		ready := "notify"
		if !b.e.notify {
			ready = "delay=1s"
		}
		appEnv := append([]string{"APP_VERSION=v1", "DRAIN_TIMEOUT_MS=5000"}, b.slowEnv()...)
		return b.e.startHandoff(ctx, name, n, ready, mode, []string{"node", filepath.Join(b.e.slowAppDir(), "server.js")}, appEnv)
	}}
}

func (b *bench) clusterSlow(n int) side {
	name := fmt.Sprintf("node cluster (%d)", n)
	return side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startClusterApp(ctx, name, b.e.slowAppDir(), n, nodeWindow(0), b.slowEnv())
	}}
}

func (b *bench) pm2Slow(n int) side {
	name := fmt.Sprintf("PM2 cluster (%d)", n)
	return side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startPM2App(ctx, name, b.e.slowAppDir(), n, nodeWindow(0), b.slowEnv())
	}}
}

// slowEnv tells the apps of bench/apps/slow how slow /slow is: a sleep
// in gunicorn, a CPU loop in Node (SLOW_MODE).
func (b *bench) slowEnv() []string {
	return []string{fmt.Sprintf("SLOW_MS=%d", b.cfg.loadSlow.Milliseconds()), "SLOW_MODE=cpu"}
}

// steerDefault is handoff run without --balance: steer, eBPF where
// allowed.
var steerDefault = balanceMode{name: "steer (default)"}

// hostPort is the address of a side's URL.
func hostPort(url string) string {
	return strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
}

func (b *bench) loadAware(ctx context.Context) section {
	return section{
		Title: fmt.Sprintf("11. Load-aware steering (issue 16): slow requests on %d single-threaded workers, and a hung worker", b.cfg.loadWorkers),
		More:  []table{b.slowRequests(ctx), b.hungWorker(ctx)},
	}
}

// ---- the client ----

// reqRecord is one request of a closed loop.
type reqRecord struct {
	start, end time.Duration // since the run began
	err        string        // "" if it succeeded, else its kind
}

// loopOpts describe a closed loop of new connections.
type loopOpts struct {
	addr, path string
	clients    int
	d          time.Duration // requests start until d after the run began
	timeout    time.Duration // bounds one request, connect to close
	firstAddr  int           // client i connects from clientAddr(firstAddr+i)
}

// oneRequest connects from src, sends req (asking the server to close),
// reads the answer and the server's close, all within timeout; sent, if
// set, is called once the request is written. ctx's end ends it.
func oneRequest(ctx context.Context, src net.IP, addr string, req []byte, timeout time.Duration, sent func()) (answer, error) {
	deadline := time.Now().Add(timeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := dialFrom(dctx, src, addr)
	if err != nil {
		return answer{}, err
	}
	defer c.close()
	unhook := context.AfterFunc(ctx, c.close)
	defer unhook()
	c.deadline = deadline
	if err := c.send(req); err != nil {
		return answer{}, err
	}
	if sent != nil {
		sent()
	}
	return c.answer(true)
}

// maxRecords bounds the requests one client of closedLoop records.
const maxRecords = 1 << 20

// closedLoop runs o.clients clients from t0 on, each sending one GET
// o.path on a new connection, reading the answer and the server's close,
// and starting over, until o.d after t0; requests in flight then finish
// or time out. Every error counts; nothing is retried.
func closedLoop(ctx context.Context, o loopOpts, t0 time.Time) []reqRecord {
	req := request(o.path, true)
	per := make([][]reqRecord, o.clients)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := clientAddr(o.firstAddr + i)
			for ctx.Err() == nil && len(per[i]) < maxRecords {
				s := time.Since(t0)
				if s >= o.d {
					return
				}
				_, err := oneRequest(ctx, src, o.addr, req, o.timeout, nil)
				r := reqRecord{start: s, end: time.Since(t0)}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					r.err = classifyError(err.Error(), 0)
				}
				per[i] = append(per[i], r)
			}
		}()
	}
	wg.Wait()
	var all []reqRecord
	for _, p := range per {
		all = append(all, p...)
	}
	return all
}

// slowTally is what the slow client got.
type slowTally struct {
	ok, failed int
	errs       map[string]int64
}

// slowLoop sends GET path on one new connection after another from
// clientAddr(0) until stop is closed, finishing the request in flight
// then; started is closed once the first request is sent (or has failed).
func slowLoop(ctx context.Context, addr, path string, stop <-chan struct{}, started chan<- struct{}) slowTally {
	t := slowTally{errs: map[string]int64{}}
	var once sync.Once
	signal := func() { once.Do(func() { close(started) }) }
	defer signal()
	req := request(path, true)
	for ctx.Err() == nil {
		select {
		case <-stop:
			return t
		default:
		}
		_, err := oneRequest(ctx, clientAddr(0), addr, req, requestTimeout, signal)
		if err != nil {
			if ctx.Err() != nil {
				return t
			}
			t.failed++
			t.errs[classifyError(err.Error(), 0)]++
			signal()
			continue
		}
		t.ok++
	}
	return t
}

// ---- statistics ----

// durQuantile is the q-quantile of sorted by nearest rank (the smallest
// sample with at least q of them at or below it); 0 without samples.
func durQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// fastRun is what the fast clients got in one run.
type fastRun struct {
	ok, failed    int
	rps           float64 // successful requests per second of the run
	p50, p90, p99 time.Duration
	errs          map[string]int64
	slow          slowTally
	lat           []float64 // the answered ones' times in ms, for the plot
}

// summarizeFast sums up the fast requests of a run of length d.
func summarizeFast(recs []reqRecord, d time.Duration) fastRun {
	f := fastRun{errs: map[string]int64{}}
	var lat []time.Duration
	for _, r := range recs {
		if r.err != "" {
			f.failed++
			f.errs[r.err]++
			continue
		}
		f.ok++
		lat = append(lat, r.end-r.start)
		f.lat = append(f.lat, ms(r.end-r.start))
	}
	slices.Sort(lat)
	f.p50, f.p90, f.p99 = durQuantile(lat, 0.5), durQuantile(lat, 0.9), durQuantile(lat, 0.99)
	if d > 0 {
		f.rps = float64(f.ok) / d.Seconds()
	}
	return f
}

// perSecond counts the successful requests that ended in each whole
// second of [from, from+n s).
func perSecond(recs []reqRecord, from time.Duration, n int) []float64 {
	out := make([]float64, n)
	for _, r := range recs {
		if r.err != "" || r.end < from {
			continue
		}
		if k := int((r.end - from) / time.Second); k < n {
			out[k]++
		}
	}
	return out
}

// rateBetween is the successful requests per second that ended in
// [from, to).
func rateBetween(recs []reqRecord, from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	n := 0
	for _, r := range recs {
		if r.err == "" && r.end >= from && r.end < to {
			n++
		}
	}
	return float64(n) / (to - from).Seconds()
}

// recoveredAfter is the number of whole seconds after which every second
// of after stays at share of before or above: 0 if it never dropped, -1
// if it is not back by the end (or nothing was measured).
func recoveredAfter(after []float64, before, share float64) int {
	if len(after) == 0 || before <= 0 {
		return -1
	}
	k := len(after)
	for k > 0 && after[k-1] >= share*before {
		k--
	}
	if k == len(after) {
		return -1
	}
	return k
}

// ratioJudge renders the median of paired per-round ratios with its 95 %
// interval, and judges it against goal (at most goal when atMost, else at
// least); judge "" without a goal. The verdict is "–" with too few
// rounds for an interval.
func ratioJudge(rs []float64, goal float64, atMost bool) (cell, verdict string) {
	if len(rs) == 0 {
		return "–", "–"
	}
	med := quantile(rs, 0.5)
	lo, hi, cov := medianCI(rs, 0.95)
	cell = fmtSmallRatio(med)
	if cov >= 0.95 {
		cell += fmt.Sprintf(" (%s–%s)", fmtSmallRatio(lo), fmtSmallRatio(hi))
	} else {
		cell += fmt.Sprintf(" (%s: too few for a 95 %% interval)", plural(len(rs), "round"))
		lo, hi = math.NaN(), math.NaN()
	}
	if goal == 0 {
		return cell, ""
	}
	if atMost {
		return cell, goalAtMost(lo, hi, goal)
	}
	return cell, goalAtLeast(lo, hi, goal)
}

// goalAtMost is goalAtLeast for a goal not to exceed: "✓" when all of the
// interval is at or below it, "✗" when all of it is above.
func goalAtMost(lo, hi, goal float64) string {
	switch {
	case math.IsNaN(lo) || math.IsNaN(hi):
		return "–"
	case hi <= goal:
		return "✓"
	case lo > goal:
		return "✗"
	}
	return "unresolved"
}

// fmtSmallRatio is fmtRatio with two significant digits below 0.1 (a
// steered side can serve a hundredth of what shared does).
func fmtSmallRatio(f float64) string {
	if f > 0 && f < 0.1 {
		return strconv.FormatFloat(f, 'g', 2, 64)
	}
	return fmtRatio(f)
}

// fmtDur renders a latency: "0.84 ms", "12 ms", "1.02 s".
func fmtDur(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmtMS(ms(d))
}

// fmtSeconds renders per-second counts as shares of before: "100 / 0 / 3".
func fmtSeconds(after []float64, before float64) string {
	parts := make([]string, len(after))
	for i, a := range after {
		if before <= 0 {
			parts[i] = "–"
			continue
		}
		parts[i] = strconv.Itoa(int(math.Round(100 * a / before)))
	}
	return strings.Join(parts, " / ")
}

// ---- slow requests ----

// slowPair is a side measured against a baseline (another index of the
// same table), under goals or not.
type slowPair struct {
	s        side
	baseline int  // index of the baseline side, -1 for a baseline
	goals    bool // the side is handoff's steer: the goals apply
}

func (b *bench) slowRequests(ctx context.Context) table {
	n := b.cfg.loadWorkers
	py := gunicornPython()
	sides := []slowPair{
		{s: b.handoffGunicornSlow(n, steerDefault, py), baseline: 1, goals: true},
		{s: b.handoffGunicornSlow(n, sharedMode, py), baseline: -1},
		{s: b.handoffNodeSlow(n, steerDefault), baseline: 3, goals: true},
		{s: b.handoffNodeSlow(n, sharedMode), baseline: -1},
		{s: b.clusterSlow(n), baseline: 3},
		{s: b.pm2Slow(n), baseline: 3},
	}
	var notes []string
	plain := make([]side, len(sides))
	for i, sp := range sides {
		plain[i] = sp.s
		if b.selected(sp.s) && sp.s.unavailable != "" {
			notes = append(notes, sp.s.name+": left out: "+sp.s.unavailable+".")
		}
	}
	rounds := b.cfg.loadRounds
	runs := make([][]*fastRun, len(sides))
	for i := range runs {
		runs[i] = make([]*fastRun, rounds)
	}
	srvs, stopAll := b.startAll(ctx, "load", plain)
	defer stopAll()
	listeners := make([]string, len(sides))
	for i, srv := range srvs {
		if srv != nil {
			b.warm(ctx, srv)
		}
		if h, ok := srv.(*handoffServer); ok {
			l := h.listener
			listeners[i] = l.Balance
			if l.Mechanism != "" {
				listeners[i] = fmt.Sprintf("%s (%s, %s)", l.Balance, l.Mechanism, l.Selection)
			}
		}
	}
	var busyRounds []string
	w := b.watchCPU()
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		rw := b.watchCPU()
		for _, i := range order(len(sides), r) {
			srv := srvs[i]
			if srv == nil || ctx.Err() != nil {
				continue
			}
			f, err := b.slowRun(ctx, srv)
			if err != nil {
				if ctx.Err() == nil {
					b.fail("load: %s: round %d: %v", sides[i].s.name, r+1, err)
				}
				continue
			}
			if f.failed > 0 || f.slow.failed > 0 {
				notes = append(notes, fmt.Sprintf("%s, round %d: %d fast request(s) failed (%s), %d slow (%s).", sides[i].s.name, r+1,
					f.failed, errorSummary(f.errs), f.slow.failed, errorSummary(f.slow.errs)))
			}
			runs[i][r] = &f
		}
		if o := rw.share(); o >= busyShare {
			busyRounds = append(busyRounds, fmt.Sprintf("%d (%s)", r+1, fmtShare(o)))
		}
	}
	total := w.share()
	for i, sp := range sides {
		var lat []float64
		for _, f := range runs[i] {
			if f != nil {
				lat = append(lat, f.lat...)
			}
		}
		if len(lat) == 0 {
			continue
		}
		app := "node"
		if strings.Contains(sp.s.name, "gunicorn") {
			app = "gunicorn"
		}
		ls := latencySeries{Side: sp.s.name, App: app, Shared: strings.Contains(sp.s.name, "shared"), FastMS: thin(lat, maxLatencyPoints), Count: len(lat)}
		if srvs[i] != nil {
			ls.Side = sideLabel(srvs[i])
		}
		b.record(func(d *benchData) { d.Load = append(d.Load, ls) })
	}

	// Per side and round: fast req/s and p99 in ms (0: no sample).
	rps := make([][]float64, len(sides))
	p99 := make([][]float64, len(sides))
	for i := range sides {
		rps[i], p99[i] = make([]float64, rounds), make([]float64, rounds)
		for r, f := range runs[i] {
			if f != nil && f.ok > 0 {
				rps[i][r], p99[i][r] = f.rps, ms(f.p99)
			}
		}
	}
	med := func(i int, get func(*fastRun) float64) float64 {
		var xs []float64
		for _, f := range runs[i] {
			if f != nil {
				xs = append(xs, get(f))
			}
		}
		return quantile(xs, 0.5)
	}
	var rows [][]string
	for i, sp := range sides {
		if !b.runs(sp.s) {
			continue
		}
		how := listeners[i]
		if how == "" {
			how = clusterDeal
		}
		if !slices.ContainsFunc(runs[i], func(f *fastRun) bool { return f != nil }) {
			rows = append(rows, []string{sp.s.name, how, "did not run"})
			continue
		}
		row := []string{sp.s.name, how,
			fmtCount(int64(med(i, func(f *fastRun) float64 { return float64(f.ok) }))),
			fmtMS(med(i, func(f *fastRun) float64 { return ms(f.p50) })),
			fmtMS(med(i, func(f *fastRun) float64 { return ms(f.p90) })),
			fmtMS(med(i, func(f *fastRun) float64 { return ms(f.p99) })),
			fmtCount(int64(med(i, func(f *fastRun) float64 { return float64(f.slow.ok) }))),
		}
		if sp.baseline < 0 {
			rows = append(rows, append(row, "baseline", "baseline", ""))
			continue
		}
		base := sides[sp.baseline].s.name
		var goals []string
		p99Cell, p99Verdict := ratioJudge(roundRatios(p99[i], p99[sp.baseline]), ifGoal(sp.goals, loadP99Factor), true)
		rpsCell, rpsVerdict := ratioJudge(roundRatios(rps[i], rps[sp.baseline]), ifGoal(sp.goals, loadRPSGoal), false)
		if sp.goals {
			lo, hi, cov := medianCI(p99[i], 0.95)
			abs := "–"
			if cov >= 0.95 {
				abs = goalAtMost(lo, hi, ms(loadP99Max)-1e-9)
			}
			goals = []string{
				fmt.Sprintf("p99 ≤ %.1f× shared: %s", loadP99Factor, p99Verdict),
				fmt.Sprintf("p99 < %s: %s", fmtDur(loadP99Max), abs),
				fmt.Sprintf("req/s ≥ %.1f× shared: %s", loadRPSGoal, rpsVerdict),
			}
		} else {
			goals = []string{"none (÷ " + base + ")"}
		}
		rows = append(rows, append(row, p99Cell, rpsCell, strings.Join(goals, "; ")))
	}
	if len(busyRounds) > 0 {
		notes = append(notes, fmt.Sprintf("**Other processes used more than %s of the machine's CPU in round(s) %s; the figures may be skewed by it.**", fmtShare(busyShare), strings.Join(busyRounds, ", ")))
	}
	notes = append(notes, fmt.Sprintf("Other processes on the machine used %s of its CPU during these rounds.", fmtShare(total)))
	return table{
		Intro: []string{
			fmt.Sprintf("**Slow requests.** `bench/apps/slow`: `/` answers at once, `/slow` takes %s: gunicorn's sync worker sleeps (`python3 -m gunicorn --workers 1 --preload slowapp:app` under `handoff run --workers %d`), the Node app (examples/node/server.js with a slow path) spins the CPU; both serve nothing else meanwhile. Node's cluster module and PM2 in cluster mode run the same Node app, %d workers. All sides run side by side and take turns, %s with the order rotated, %s; in each run one client loops on `/slow` while %d clients send `GET /` for %s, each request on a new connection with `Connection: close` (the bench's own client, 10 s timeout, nothing retried). A plain single process is left out: one single-threaded process busy with `/slow` answers nothing else, so its fast p99 is the slow path's time by construction.",
				b.cfg.loadSlow, n, n, plural(rounds, "round"), warmText(b.cfg.warmup), fastClients, b.cfg.loadDuration),
			fmt.Sprintf("Fast requests per run, p50/p90/p99 of their time (connect to the server's close) and slow requests answered are medians over the rounds. The ratios are medians of the rounds' ratios to the baseline of the same app (handoff `--balance shared`; a round's runs are next to each other in time), with a distribution-free 95 %% interval. Goals for steer (issue 16): fast p99 at most %.1f× shared's and below %s, fast throughput at least %.1f× shared's; ✓ when the whole interval meets a goal, ✗ when none of it does, \"unresolved\" in between, – with too few rounds (-load-rounds).",
				loadP99Factor, fmtDur(loadP99Max), loadRPSGoal),
		},
		Header: []string{"side", "how it balances", "fast requests", "fast p50", "fast p90", "fast p99", "slow answered", "p99 ÷ shared (95 % CI)", "req/s ÷ shared (95 % CI)", "goals"},
		Rows:   rows,
		Notes:  notes,
	}
}

func ifGoal(on bool, g float64) float64 {
	if on {
		return g
	}
	return 0
}

// slowRun is one run of the slow-requests load on srv.
func (b *bench) slowRun(ctx context.Context, srv server) (fastRun, error) {
	addr := hostPort(srv.url())
	stop, started := make(chan struct{}), make(chan struct{})
	done := make(chan slowTally, 1)
	go func() { done <- slowLoop(ctx, addr, "/slow", stop, started) }()
	select {
	case <-started:
	case <-ctx.Done():
		close(stop)
		<-done
		return fastRun{}, ctx.Err()
	}
	d := b.cfg.loadDuration
	recs := closedLoop(ctx, loopOpts{addr: addr, path: "/", clients: fastClients, d: d, timeout: requestTimeout, firstAddr: 1}, time.Now())
	// The slow client finishes its request in flight: the next side's run
	// does not share the machine with this one's slow path.
	close(stop)
	slow := <-done
	if ctx.Err() != nil {
		return fastRun{}, ctx.Err()
	}
	f := summarizeFast(recs, d)
	f.slow = slow
	if f.ok == 0 {
		return f, fmt.Errorf("no fast request succeeded (%s)", errorSummary(f.errs))
	}
	if slow.ok == 0 {
		return f, fmt.Errorf("no slow request succeeded (%s)", errorSummary(slow.errs))
	}
	return f, nil
}

// ---- a hung worker ----

// hangResult is one side's run with a hung worker.
type hangResult struct {
	requests, failed int
	errs             map[string]int64
	before           float64   // req/s before the STOP
	after            []float64 // successful requests in each second after it
	replaced         string    // whether and when the stopped worker was replaced
	others           float64
	how              string
}

func (b *bench) hungWorker(ctx context.Context) table {
	n := b.cfg.loadWorkers
	sides := []side{
		b.handoffHelloBalanced(n, steerDefault),
		b.handoffHelloBalanced(n, sharedMode),
		b.cluster(n, 0),
		b.pm2(n, 0),
	}
	var rows [][]string
	var notes, busy []string
	for r := 0; r < b.cfg.hangRounds && ctx.Err() == nil; r++ {
		for _, i := range order(len(sides), r) {
			s := sides[i]
			if !b.runs(s) {
				continue
			}
			name := s.name
			if b.cfg.hangRounds > 1 {
				name = fmt.Sprintf("%s, round %d", s.name, r+1)
			}
			var res *hangResult
			w := b.watchCPU()
			b.use(ctx, "load (hung worker)", s, func(srv server) error {
				var err error
				res, err = b.hangRun(ctx, srv)
				return err
			})
			if res == nil {
				rows = append(rows, []string{name, "", "did not run"})
				continue
			}
			res.others = w.share()
			if res.others >= busyShare {
				busy = append(busy, fmt.Sprintf("%s (%s)", name, fmtShare(res.others)))
			}
			low := math.NaN()
			if len(res.after) > 0 && res.before > 0 {
				low = slices.Min(res.after) / res.before
			}
			back := "not within the run"
			switch k := recoveredAfter(res.after, res.before, hangRecovered); {
			case k == 0:
				back = "never dropped below"
			case k > 0:
				back = fmt.Sprintf("%d s", k)
			}
			failed := fmtCount(int64(res.failed))
			if res.failed > 0 {
				failed += " (" + errorSummary(res.errs) + ")"
			}
			rows = append(rows, []string{name, res.how, fmtCount(int64(res.requests)), failed, fmtRPS(res.before),
				fmtPct(low), back, res.replaced, othersCell(res.others)})
			notes = append(notes, fmt.Sprintf("%s: successful requests in each second after the STOP, %% of the level before: %s.", name, fmtSeconds(res.after, res.before)))
		}
	}
	if len(busy) > 0 {
		notes = append(notes, "**Other processes used more than "+fmtShare(busyShare)+" of the machine's CPU while these sides ran; their figures may be skewed by it: "+strings.Join(busy, ", ")+".**")
	}
	before, after := b.cfg.hangBefore, b.cfg.hangAfter
	return table{
		Intro: []string{
			fmt.Sprintf("**A hung worker.** examples/hello (examples/node/server.js for Node's cluster and PM2), %d workers, each side started fresh for its run. %d clients, each request on a new connection with `Connection: close`, %s timeout from connect to answer, nothing retried; after %s one worker gets SIGSTOP (handoff's: slot 0's pid from `handoff status --json`; Node's: one worker process), and the load goes on for %s; then SIGCONT and the side is stopped. Throughput before: successful requests per second ending in the last %s before the STOP. Lowest second after, as a share of that; back: the seconds after the STOP from which every second stays at %s of it or above. Replaced: whether the supervisor put a new process in the stopped one's place (handoff: a new pid in its slot in `handoff status`; Node: a new worker pid), and when after the STOP.",
				n, hangClients, hangTimeout, before, after, before-hangWarm(before), fmtPct(hangRecovered)),
		},
		Header: []string{"side", "how it balances", "requests", "failed", "req/s before", "lowest second after", fmt.Sprintf("back to ≥ %s", fmtPct(hangRecovered)), "stopped worker replaced", "others' CPU"},
		Rows:   rows,
		Notes:  notes,
	}
}

// hangWarm is the start of a hang run left out of the level before.
func hangWarm(before time.Duration) time.Duration { return min(time.Second, before/2) }

// hangRun loads srv, stops one of its workers, and measures.
func (b *bench) hangRun(ctx context.Context, srv server) (*hangResult, error) {
	res := &hangResult{how: clusterDeal}
	h, isHandoff := srv.(*handoffServer)
	var pid, slot int
	known := map[int]bool{}
	if isHandoff {
		l := h.listener
		res.how = l.Balance
		if l.Mechanism != "" {
			res.how = fmt.Sprintf("%s (%s, %s)", l.Balance, l.Mechanism, l.Selection)
		}
		st, err := h.status(ctx)
		if err != nil {
			return nil, err
		}
		for _, w := range st.Workers {
			if w.PID > 0 && (pid == 0 || w.Slot < slot) {
				pid, slot = w.PID, w.Slot
			}
		}
	} else {
		ws := nodeWorkers(srv)
		for _, p := range ws {
			known[p] = true
		}
		if len(ws) > 0 {
			pid = ws[0]
		}
	}
	if pid == 0 {
		return nil, errors.New("no worker pid to stop")
	}
	before, after := b.cfg.hangBefore, b.cfg.hangAfter
	t0 := time.Now()
	stopAt := t0.Add(before)
	var stopped sync.WaitGroup
	stopped.Add(1)
	watchCtx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	var stopErr error
	go func() {
		defer stopped.Done()
		t := time.NewTimer(time.Until(stopAt))
		defer t.Stop()
		select {
		case <-t.C:
		case <-watchCtx.Done():
			return
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			stopErr = fmt.Errorf("SIGSTOP %d: %w", pid, err)
			return
		}
		logf("load: %s: SIGSTOP worker %d", srv.label(), pid)
		res.replaced = watchReplaced(watchCtx, srv, pid, slot, known, stopAt)
	}()
	// Whatever happens, the worker gets going again before the side stops.
	defer syscall.Kill(pid, syscall.SIGCONT)
	recs := closedLoop(ctx, loopOpts{addr: hostPort(srv.url()), path: "/", clients: hangClients, d: before + after,
		timeout: hangTimeout, firstAddr: 0}, t0)
	endWatch()
	stopped.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if stopErr != nil {
		return nil, stopErr
	}
	res.errs = map[string]int64{}
	for _, r := range recs {
		res.requests++
		if r.err != "" {
			res.failed++
			res.errs[r.err]++
		}
	}
	res.before = rateBetween(recs, hangWarm(before), before)
	res.after = perSecond(recs, before, int(after/time.Second))
	if res.before == 0 {
		return res, fmt.Errorf("no request succeeded before the STOP (%s)", errorSummary(res.errs))
	}
	if res.replaced == "" {
		res.replaced = "no"
	}
	return res, nil
}

// nodeWorkers are the processes of a Node side that run a server.js.
func nodeWorkers(srv server) []int {
	var out []int
	for _, p := range srv.workerPIDs() {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if err == nil && strings.Contains(string(cmd), "server.js") {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// watchReplaced polls until ctx ends for a process that took the stopped
// pid's place, and says when it first saw one: for handoff, another pid
// in its slot in `handoff status`; else a worker pid not in known.
func watchReplaced(ctx context.Context, srv server, pid, slot int, known map[int]bool, stoppedAt time.Time) string {
	last := ""
	for ctx.Err() == nil {
		if h, ok := srv.(*handoffServer); ok {
			if st, err := h.status(ctx); err == nil {
				last = ""
				if np, state := slotPID(st, slot, pid); np != 0 {
					return fmt.Sprintf("yes, after %.1f s (pid %d → %d, %s)", time.Since(stoppedAt).Seconds(), pid, np, state)
				} else if state != "" {
					last = "; slot " + strconv.Itoa(slot) + ": " + state
				}
			}
		} else {
			for _, p := range nodeWorkers(srv) {
				if !known[p] {
					return fmt.Sprintf("yes, after %.1f s (new pid %d)", time.Since(stoppedAt).Seconds(), p)
				}
			}
		}
		// Each look at handoff runs its CLI: not so often that the
		// bench's own CPU use weighs on the side it measures.
		select {
		case <-ctx.Done():
		case <-time.After(replacedPoll):
		}
	}
	return "no" + last
}

// replacedPoll is how often watchReplaced looks.
const replacedPoll = 500 * time.Millisecond

// slotPID finds, in st, a worker in slot other than pid: its pid and
// state. Without one, 0 and the state of pid in the slot ("" if absent).
func slotPID(st handoffStatus, slot, pid int) (int, string) {
	state := ""
	for _, w := range st.Workers {
		if w.Slot != slot {
			continue
		}
		if w.PID != pid && w.PID > 0 {
			return w.PID, string(w.State)
		}
		state = string(w.State)
	}
	return 0, state
}
