package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is what the flags select.
type config struct {
	rounds         int
	duration       time.Duration // one throughput or balance run
	warmup         time.Duration
	reloads        int
	reloadGap      time.Duration // steady traffic between two reloads
	rate           int           // vegeta's fixed rate, requests/s
	idle           time.Duration
	workers        int
	conns          int
	wrkThreads     int
	latencyReloads int
	scaleWorkers   []int // worker counts the scale test compares
	scaleReloads   int   // reloads per worker count
	readyRounds    int   // rounds of the READY-to-READY comparison
	balanceWorkers int   // workers in the balance and sticky parts
	balanceRounds  int   // bursts of connections per side in the balance part
	steerRounds    int   // rounds of the steer part
	steerDuration  time.Duration
	stickyConns    int // connections per client address in the sticky part
	loadWorkers    int // workers per side in the load part
	loadRounds     int // rounds of the load part's slow requests
	loadDuration   time.Duration
	loadSlow       time.Duration // how long /slow takes
	hangBefore     time.Duration // load before a worker hangs
	hangAfter      time.Duration // load after it
	hangRounds     int
	minUptime      time.Duration
	soakReloads    int // reloads in the soak part
	soakRate       int // the soak's load, requests per second in all
	// The observers part: rounds, the length of one window, the load
	// (requests per second in all), and what plays a browser: "auto",
	// "chromium" or "sse".
	observersRounds  int
	observersWindow  time.Duration
	observersRate    int
	observersBrowser string
	smoke            bool
	// args are the command line's flags, for the report.
	args []string
	only []string // if set, only the sides whose names contain one of these
}

// bench runs the measurements and collects what failed.
type bench struct {
	e   *env
	cfg config
	wrk *wrkRunner

	mu       sync.Mutex
	failures []string
	keepLogs bool      // something worth a look happened: keep the scratch directory
	data     benchData // the raw series for the plots (under mu)
}

// section is one measurement's table, or several (More), and notes on all
// of them.
type section struct {
	Title  string
	Intro  []string
	Header []string
	Rows   [][]string
	Notes  []string
	More   []table
}

// table is a further table in a section, with its own text.
type table struct {
	Intro  []string
	Header []string
	Rows   [][]string
	Notes  []string
}

// fail records that a side did not run (or a run failed): the smoke mode
// exits non-zero on any.
func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf("FAILED: %s", msg)
	b.mu.Lock()
	b.failures = append(b.failures, msg)
	b.mu.Unlock()
}

// side is one way of running an app, started fresh for each use.
type side struct {
	name  string
	start func(ctx context.Context) (server, error)
	// unavailable says why the side cannot run on this machine ("" if
	// it can); such a side is left out with a note, not a failure.
	unavailable string
}

// use starts s, runs f with it, and stops it, failures recorded.
func (b *bench) use(ctx context.Context, what string, s side, f func(server) error) bool {
	if ctx.Err() != nil || !b.runs(s) {
		return false
	}
	logf("%s: %s", what, s.name)
	srv, err := s.start(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.fail("%s: %s: start: %v", what, s.name, err)
		}
		return false
	}
	defer srv.stop()
	if err := f(srv); err != nil {
		if ctx.Err() == nil {
			b.fail("%s: %s: %v", what, s.name, err)
		}
		return false
	}
	return true
}

// runs reports whether s is selected and can run here.
func (b *bench) runs(s side) bool {
	return s.unavailable == "" && b.selected(s)
}

// selected reports whether -sides selects s.
func (b *bench) selected(s side) bool {
	if len(b.cfg.only) == 0 {
		return true
	}
	for _, o := range b.cfg.only {
		if strings.Contains(strings.ToLower(s.name), strings.ToLower(o)) {
			return true
		}
	}
	return false
}

// The sides. n is the number of workers; closeWindow is the apps' drain
// window (0: their default, 300 ms).
func (b *bench) helloAlone(closeWindow time.Duration) side {
	return side{name: "hello alone", start: func(ctx context.Context) (server, error) {
		return b.e.startPlain(ctx, "hello alone", closeWindow)
	}}
}

func (b *bench) stopStart(closeWindow time.Duration) side {
	return side{name: "hello, stop + start", start: func(ctx context.Context) (server, error) {
		return b.e.startPlain(ctx, "hello, stop + start", closeWindow)
	}}
}

func (b *bench) handoffHello(n int, closeWindow time.Duration) side {
	name := fmt.Sprintf("handoff + hello (%d)", n)
	return side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startHandoffHello(ctx, name, n, closeWindow, balanceMode{})
	}}
}

// handoffHelloBalanced is handoff + hello with an explicit --balance and
// --steer-bpf.
func (b *bench) handoffHelloBalanced(n int, mode balanceMode) side {
	name := fmt.Sprintf("handoff + hello (%d), %s", n, mode.name)
	s := side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startHandoffHello(ctx, name, n, 0, mode)
	}}
	if mode.mechanism == "ebpf" && !canEBPF() {
		s.unavailable = "eBPF needs root"
	}
	return s
}

func (b *bench) handoffNode(n int, closeWindow time.Duration) side {
	return side{name: fmt.Sprintf("handoff + node (%d)", n), start: func(ctx context.Context) (server, error) {
		return b.e.startHandoffNode(ctx, n, nodeWindow(closeWindow))
	}}
}

func (b *bench) cluster(n int, closeWindow time.Duration) side {
	return side{name: fmt.Sprintf("node cluster (%d)", n), start: func(ctx context.Context) (server, error) {
		return b.e.startCluster(ctx, n, nodeWindow(closeWindow))
	}}
}

func (b *bench) pm2(n int, closeWindow time.Duration) side {
	return side{name: fmt.Sprintf("PM2 cluster (%d)", n), start: func(ctx context.Context) (server, error) {
		return b.e.startPM2(ctx, n, nodeWindow(closeWindow))
	}}
}

func nodeWindow(d time.Duration) time.Duration {
	if d <= 0 {
		return 300 * time.Millisecond
	}
	return d
}

// startAll starts every selected side and returns them (nil where a side
// did not start) and the function that stops them all.
func (b *bench) startAll(ctx context.Context, what string, sides []side) ([]server, func()) {
	srvs := make([]server, len(sides))
	for i, s := range sides {
		if ctx.Err() != nil || !b.runs(s) {
			continue
		}
		logf("%s: starting %s", what, s.name)
		srv, err := s.start(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.fail("%s: %s: start: %v", what, s.name, err)
			}
			continue
		}
		srvs[i] = srv
	}
	return srvs, func() {
		for _, srv := range srvs {
			if srv != nil {
				srv.stop()
			}
		}
	}
}

// order is the order of n sides in round r: rotated every round, so that
// each side in turn runs first.
func order(n, r int) []int {
	o := make([]int, n)
	for k := range o {
		o[k] = (k + r) % n
	}
	return o
}

// pause waits d unless ctx ends first. Used for measurement windows only
// (warm-up, idle time, traffic between reloads), never to wait for a state.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (b *bench) warm(ctx context.Context, srv server) {
	if b.cfg.warmup <= 0 {
		return
	}
	_, _ = b.wrk.run(ctx, wrkOpts{URL: srv.url(), Threads: b.cfg.wrkThreads, Connections: b.cfg.conns,
		Duration: b.cfg.warmup, KeepAlive: true}, nil)
}

func (b *bench) wrkOpts(srv server, keepAlive bool) wrkOpts {
	return wrkOpts{URL: srv.url(), Threads: b.cfg.wrkThreads, Connections: b.cfg.conns,
		Duration: b.cfg.duration, KeepAlive: keepAlive}
}

// checkRan fails a load run that served nothing.
func checkRan(r loadResult) error {
	if r.Requests-r.Failed <= 0 {
		return fmt.Errorf("%s: no successful request (%s)", r.Tool, errorSummary(r.Errors))
	}
	return nil
}

// ---- 1. overhead ----

func (b *bench) overhead(ctx context.Context) section {
	sides := []side{b.helloAlone(0), b.handoffHello(1, 0)}
	type samples struct{ rps, p99w, p99v []float64 } // by round; 0: no sample
	res := make([]samples, len(sides))
	for i := range res {
		res[i] = samples{make([]float64, b.cfg.rounds), make([]float64, b.cfg.rounds), make([]float64, b.cfg.rounds)}
	}
	// Both run throughout (the idle one costs nothing) and take turns, so
	// that a change in the machine's load hits both alike.
	srvs, stopAll := b.startAll(ctx, "overhead", sides)
	defer stopAll()
	for _, srv := range srvs {
		if srv != nil {
			b.warm(ctx, srv)
		}
	}
	for r := 0; r < b.cfg.rounds && ctx.Err() == nil; r++ {
		for _, i := range order(len(sides), r) {
			srv := srvs[i]
			if srv == nil {
				continue
			}
			w, err := b.wrk.run(ctx, b.wrkOpts(srv, true), nil)
			if err == nil {
				err = checkRan(w)
			}
			if err != nil {
				b.fail("overhead: %s: %v", sides[i].name, err)
				continue
			}
			res[i].rps[r], res[i].p99w[r] = w.RPS, ms(w.P99)
		}
		for _, i := range order(len(sides), r) {
			srv := srvs[i]
			if srv == nil {
				continue
			}
			v, err := runVegeta(ctx, vegetaOpts{URL: srv.url(), Rate: b.cfg.rate, Duration: b.cfg.duration, KeepAlive: true}, nil)
			if err == nil {
				err = checkRan(v)
			}
			if err != nil {
				b.fail("overhead: %s: %v", sides[i].name, err)
				continue
			}
			res[i].p99v[r] = ms(v.P99)
		}
	}
	a, h := res[0], res[1]
	rpsRatio := pairedRatio(h.rps, a.rps)
	goal := "✗"
	if rpsRatio >= 0.98 {
		goal = "✓"
	}
	return section{
		Title: "1. Overhead: examples/hello alone vs under handoff (1 worker)",
		Intro: []string{fmt.Sprintf("Same binary, same load. wrk: %d thread(s), %d keep-alive connections, %s per run; vegeta: %d req/s, keep-alive, %s. Both run side by side and take turns, %d rounds. Medians; each ratio is the median of the rounds' ratios (a round's two runs are next to each other in time, which cancels drifts in the machine's load).",
			b.cfg.wrkThreads, b.cfg.conns, b.cfg.duration, b.cfg.rate, b.cfg.duration, b.cfg.rounds)},
		Header: []string{"metric", "hello alone", "handoff + hello (1)", "ratio (≥ 1: handoff as good)", "goal"},
		Rows: [][]string{
			{"requests/s (wrk, saturation)", fmtRPS(median(a.rps)), fmtRPS(median(h.rps)), fmtRatio(rpsRatio), "≥ 0.98 " + goal},
			{"p99 latency (wrk, saturation)", fmtMS(median(a.p99w)), fmtMS(median(h.p99w)), fmtRatio(pairedRatio(a.p99w, h.p99w)), ""},
			{fmt.Sprintf("p99 latency (vegeta, %d req/s)", b.cfg.rate), fmtMS(median(a.p99v)), fmtMS(median(h.p99v)), fmtRatio(pairedRatio(a.p99v, h.p99v)), ""},
		},
		Notes: []string{"All rounds: hello alone " + fmtList(a.rps, fmtRPS) + " req/s; handoff " + fmtList(h.rps, fmtRPS) + " req/s."},
	}
}

// ---- 2. reload under load ----

func (b *bench) reloadUnderLoad(ctx context.Context) section {
	n := b.cfg.workers
	sides := []side{b.handoffHello(n, 0), b.handoffHelloBalanced(n, sharedMode), b.handoffNode(n, 0), b.cluster(n, 0), b.pm2(n, 0), b.stopStart(0)}
	type outcome struct {
		ran     bool
		res     loadResult
		reloads int
		err     string
		starts  []time.Time // when each reload started
	}
	var rows [][]string
	notes := []string{"Goal: 0 failed for handoff with both tools."}
	results := map[string][2]outcome{}
	for t, tool := range []string{"vegeta", "wrk"} {
		for _, s := range sides {
			var o outcome
			o.ran = b.use(ctx, "reload under load ("+tool+")", s, func(srv server) error {
				stop := make(chan struct{})
				done := make(chan struct{})
				var res loadResult
				var lerr error
				bound := time.Duration(b.cfg.reloads)*20*time.Second + 30*time.Second
				go func() {
					defer close(done)
					if tool == "vegeta" {
						res, lerr = runVegeta(ctx, vegetaOpts{URL: srv.url(), Rate: b.cfg.rate, KeepAlive: true, MaxDuration: bound, Bucket: timelineBucket}, stop)
					} else {
						wo := b.wrkOpts(srv, true)
						wo.Duration = bound
						res, lerr = b.wrk.run(ctx, wo, stop)
					}
				}()
				pause(ctx, b.cfg.reloadGap*2)
				var rerr error
				for i := 0; i < b.cfg.reloads && ctx.Err() == nil; i++ {
					o.starts = append(o.starts, time.Now())
					if rerr = srv.reload(ctx); rerr != nil {
						rerr = fmt.Errorf("reload %d of %d: %w", i+1, b.cfg.reloads, rerr)
						break
					}
					o.reloads++
					pause(ctx, b.cfg.reloadGap)
				}
				pause(ctx, b.cfg.reloadGap*2)
				close(stop)
				<-done
				o.res = res
				if tool == "vegeta" && len(res.OKPer) > 0 {
					b.recordTimeline(srv, res, o.starts)
				}
				if lerr != nil {
					return lerr
				}
				if rerr != nil {
					o.err = rerr.Error()
					return rerr
				}
				return checkRan(res)
			})
			r := results[s.name]
			r[t] = o
			results[s.name] = r
		}
	}
	cell := func(o outcome) string {
		if !o.ran && o.res.Requests == 0 {
			return "did not run"
		}
		c := fmt.Sprintf("**%d** of %s", o.res.Failed, fmtCount(o.res.Requests))
		if o.res.Failed > 0 {
			c += " (" + errorSummary(o.res.Errors) + ")"
		}
		return c
	}
	for _, s := range sides {
		if !b.selected(s) {
			continue
		}
		r := results[s.name]
		reloads := fmt.Sprintf("%d / %d", r[0].reloads, r[1].reloads)
		if r[0].err != "" || r[1].err != "" {
			reloads += " ✗"
		}
		rows = append(rows, []string{s.name, cell(r[0]), cell(r[1]), reloads})
		if strings.HasPrefix(s.name, "handoff") && r[0].res.Failed+r[1].res.Failed > 0 {
			b.mu.Lock()
			b.keepLogs = true
			b.mu.Unlock()
			notes = append(notes, fmt.Sprintf("%s failed requests: its logs are kept in %s.", s.name, b.e.reg.logDir))
		}
		if f := failureTimes(r[0].res.Failures, r[0].starts, r[0].res.Failed); f != "" {
			notes = append(notes, fmt.Sprintf("%s, vegeta failures by time after the start of the reload before them: %s.", s.name, f))
		}
		for _, o := range r {
			if o.err != "" {
				notes = append(notes, fmt.Sprintf("%s: %s.", s.name, o.err))
			}
		}
	}
	return section{
		Title: fmt.Sprintf("2. Failed requests over %d reloads under load", b.cfg.reloads),
		Intro: []string{
			fmt.Sprintf("vegeta: %d req/s with keep-alive, POST so Go's client cannot silently retry a request lost on a reused connection; every error and non-200 answer counts. wrk: saturation, %d keep-alive connections; wrk does not retry, and every connect/read/write error, timeout and non-2xx answer counts.", b.cfg.rate, b.cfg.conns),
			fmt.Sprintf("Each side starts with %d workers; reloads follow each other with %s of traffic between them (a reload returns when the new workers serve and the old ones have exited). Apps drain with a 300 ms `Connection: close` window, then close. handoff reloads with `handoff reload --wait` and, for hello, alternates between two builds (checked in the answers); node cluster with SIGHUP; PM2 with `pm2 reload`; stop + start is SIGTERM, wait for exit, start the other build.", n, b.cfg.reloadGap),
		},
		Header: []string{"side", "vegeta: failed of requests", "wrk: failed of requests", "reloads done (vegeta / wrk)"},
		Rows:   rows,
		Notes:  notes,
	}
}

// timelineBucket is the reload part's time step for the plots.
const timelineBucket = 100 * time.Millisecond

// recordTimeline keeps a vegeta run's counts per timelineBucket and its
// reloads' starts for the reload timeline plot.
func (b *bench) recordTimeline(srv server, res loadResult, starts []time.Time) {
	rs := reloadSeries{Side: sideLabel(srv), Rate: b.cfg.rate, BucketMS: int(timelineBucket / time.Millisecond), OK: res.OKPer, Failed: res.FailedPer}
	for _, t := range starts {
		rs.Reloads = append(rs.Reloads, t.Sub(res.Start).Seconds())
	}
	b.record(func(d *benchData) { d.Reload = append(d.Reload, rs) })
}

// sideLabel is a side's name with, for handoff, how its listener balances
// as its status says ("steer (ebpf, round-robin)").
func sideLabel(srv server) string {
	h, ok := srv.(*handoffServer)
	if !ok {
		return srv.label()
	}
	l := h.listener
	sel := l.Balance
	if l.Mechanism != "" {
		sel = fmt.Sprintf("%s (%s, %s)", l.Balance, l.Mechanism, l.Selection)
	}
	if sel == "" || strings.Contains(h.lbl, sel) {
		return h.lbl
	}
	return h.lbl + ": " + sel
}

// failureTimes describes when each failure happened relative to the
// reload that started last before it: "reload 3 +412 ms (connection reset)".
func failureTimes(fs []failure, starts []time.Time, total int64) string {
	if len(fs) == 0 {
		return ""
	}
	const show = 10
	var parts []string
	for n, f := range fs {
		if n == show {
			parts = append(parts, fmt.Sprintf("and %d more", total-show))
			break
		}
		k := -1
		for i, t := range starts {
			if !t.After(f.At) {
				k = i
			}
		}
		if k < 0 {
			parts = append(parts, fmt.Sprintf("before the first reload (%s)", f.Kind))
			continue
		}
		parts = append(parts, fmt.Sprintf("reload %d %+d ms (%s)", k+1, f.At.Sub(starts[k]).Milliseconds(), f.Kind))
	}
	return strings.Join(parts, "; ")
}

// ---- 3. reload latency ----

// reloadTiming is one reload's times from the trigger.
type reloadTiming struct {
	firstNew   time.Duration // first answer from a process that was not serving before
	oldGone    time.Duration // every process serving before has exited
	servingMS  float64       // handoff's own: every new worker ready
	durationMS float64       // handoff's own: the old generation gone
	hasOwn     bool
}

// timeReload triggers one reload and watches from outside: new answers
// (a fresh connection per probe) and the old processes' exit.
func timeReload(ctx context.Context, srv server) (reloadTiming, error) {
	var t reloadTiming
	old := map[int]bool{}
	var oldList []int
	for _, p := range srv.workerPIDs() {
		old[p] = true
		oldList = append(oldList, p)
	}
	var h *handoffServer
	want := 0
	if hs, ok := srv.(*handoffServer); ok {
		h = hs
		st, err := h.status(ctx)
		if err != nil {
			return t, err
		}
		want = st.Generation + 1
	}
	t0 := time.Now()
	wait, err := srv.trigger(ctx)
	if err != nil {
		return t, err
	}
	deadline := t0.Add(60 * time.Second)
	for (t.firstNew == 0 || t.oldGone == 0) && time.Now().Before(deadline) && ctx.Err() == nil {
		if t.firstNew == 0 {
			if a, err := probe(ctx, srv.url(), time.Second); err == nil && !old[a.PID] {
				t.firstNew = time.Since(t0)
			}
		}
		if t.oldGone == 0 {
			gone := true
			for _, p := range oldList {
				if alive(p) {
					gone = false
					break
				}
			}
			if gone {
				t.oldGone = time.Since(t0)
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	if err := wait(); err != nil {
		return t, err
	}
	if t.firstNew == 0 || t.oldGone == 0 {
		return t, fmt.Errorf("reload not observed within 60s (new answer %v, old gone %v)", t.firstNew, t.oldGone)
	}
	if h != nil {
		for time.Now().Before(deadline) {
			st, err := h.status(ctx)
			if err != nil {
				return t, err
			}
			if r := st.LastReload; r != nil && r.Generation >= want && st.Reloading == 0 {
				if !r.OK {
					return t, fmt.Errorf("reload to generation %d failed: %s", r.Generation, r.Error)
				}
				t.servingMS, t.durationMS, t.hasOwn = float64(r.Serving.Microseconds())/1000, float64(r.Duration.Microseconds())/1000, true
				break
			}
			pause(ctx, 5*time.Millisecond)
		}
		if !t.hasOwn {
			return t, errors.New("status never showed the reload's result")
		}
	}
	return t, nil
}

// appStart times n instances of an app started at once on their own
// ports, from exec until every one answers: what a generation of n
// workers needs by itself, without a supervisor.
func (b *bench) appStart(ctx context.Context, node bool, n int) (time.Duration, error) {
	urls := make([]string, n)
	argvs := make([][]string, n)
	envs := make([][]string, n)
	for i := range n {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		urls[i] = fmt.Sprintf("http://127.0.0.1:%d/", port)
		argvs[i] = []string{b.e.hello[0], "-addr", fmt.Sprintf("127.0.0.1:%d", port)}
		if node {
			argvs[i] = []string{"node", filepath.Join(b.e.nodeDir, "server.js")}
			envs[i] = []string{fmt.Sprintf("PORT=%d", port)}
		}
	}
	t0 := time.Now()
	errs := make(chan error, n)
	for i := range n {
		p, err := b.e.reg.start(b.e.name("appstart"), argvs[i], envs[i])
		if err != nil {
			return 0, err
		}
		defer p.stop(syscall.SIGTERM, 5*time.Second)
		go func() {
			_, err := waitAnswering(ctx, urls[i], answerTimeout, p.done)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

func (b *bench) reloadLatency(ctx context.Context) section {
	n := b.cfg.workers
	const w = time.Millisecond // a tiny drain window: the app is ready at once and gone at once
	type kind struct {
		s       side
		trigger string
		node    bool
		plain   bool // no supervisor: nothing to attribute
	}
	kinds := []kind{
		{b.handoffHello(n, w), "SIGHUP to master", false, false},
		{b.handoffNode(n, w), "SIGHUP to master", true, false},
		{b.cluster(n, w), "SIGHUP to master", true, false},
		{b.pm2(n, w), "`pm2 reload` (CLI)", true, false},
		{b.stopStart(w), "SIGTERM, then exec", false, true},
	}
	var starts [2][]float64
	for i := 0; i < b.cfg.latencyReloads && ctx.Err() == nil; i++ {
		for j, node := range []bool{false, true} {
			d, err := b.appStart(ctx, node, n)
			if err != nil {
				b.fail("reload latency: app start (node=%v): %v", node, err)
				continue
			}
			starts[j] = append(starts[j], ms(d))
		}
	}
	var rows [][]string
	for _, k := range kinds {
		if !b.selected(k.s) {
			continue
		}
		var first, gone, own, ownDone []float64
		b.use(ctx, "reload latency", k.s, func(srv server) error {
			for i := 0; i < b.cfg.latencyReloads && ctx.Err() == nil; i++ {
				t, err := timeReload(ctx, srv)
				if err != nil {
					return fmt.Errorf("reload %d: %w", i+1, err)
				}
				first = append(first, ms(t.firstNew))
				gone = append(gone, ms(t.oldGone))
				if t.hasOwn {
					own = append(own, t.servingMS)
					ownDone = append(ownDone, t.durationMS)
				}
			}
			return nil
		})
		start := starts[0]
		if k.node {
			start = starts[1]
		}
		ownCell, share := "–", "–"
		if len(own) > 0 {
			ownCell = fmtMS(median(own)) + " / " + fmtMS(median(ownDone))
			if len(start) > 0 {
				share = fmtMS(median(own) - median(start))
			}
		} else if len(first) > 0 && len(start) > 0 && !k.plain {
			share = fmtMS(median(first) - median(start))
		}
		if len(first) == 0 {
			rows = append(rows, []string{k.s.name, k.trigger, "did not run", "", "", "", ""})
			continue
		}
		startCell := fmtMS(median(start))
		if k.plain {
			startCell = "–"
		}
		rows = append(rows, []string{k.s.name, k.trigger, fmtMS(median(first)), fmtMS(median(gone)), ownCell, startCell, share})
	}
	return section{
		Title: "3. Reload latency",
		Intro: []string{
			fmt.Sprintf("Medians of %d reloads per side, %d workers, apps with a 1 ms drain window so that the supervisor's own share shows. \"First new answer\" polls with a new connection per request until a process that was not serving before answers; \"old gone\" is when every process serving before has exited (polled in /proc). handoff's own figures come from `status --json` last_reload (serving_ms: all new workers ready; duration_ms: old generation gone).", b.cfg.latencyReloads, n),
			fmt.Sprintf("\"App start alone\" is %d instances of the same app started at once on their own ports, from exec until all answer.", n) + " \"Master's share\" is handoff's serving_ms (others: the first new answer) minus that: the time the supervisor adds. The old generation's exit includes retiring workers one at a time (handoff) with the apps' 1 ms window each.",
		},
		Header: []string{"side", "trigger", "→ first new answer", "→ old gone", "handoff's own: serving / done", "app start alone", "master's share"},
		Rows:   rows,
		Notes:  []string{"Goal: handoff adds under 50 ms."},
	}
}

// ---- 4. node throughput ----

func (b *bench) nodeThroughput(ctx context.Context) section {
	n := b.cfg.workers
	sides := []side{b.handoffNode(n, 0), b.cluster(n, 0), b.pm2(n, 0)}
	type samples struct{ ka, close, kaP99, closeP99 []float64 } // by round; 0: no sample
	res := make([]samples, len(sides))
	for i := range res {
		r := b.cfg.rounds
		res[i] = samples{make([]float64, r), make([]float64, r), make([]float64, r), make([]float64, r)}
	}
	srvs, stopAll := b.startAll(ctx, "node throughput", sides)
	defer stopAll()
	for _, srv := range srvs {
		if srv != nil {
			b.warm(ctx, srv)
		}
	}
	for r := 0; r < b.cfg.rounds && ctx.Err() == nil; r++ {
		for _, keepAlive := range []bool{true, false} {
			for _, i := range order(len(sides), r) {
				srv := srvs[i]
				if srv == nil {
					continue
				}
				w, err := b.wrk.run(ctx, b.wrkOpts(srv, keepAlive), nil)
				if err == nil {
					err = checkRan(w)
				}
				if err != nil {
					b.fail("node throughput: %s: %v", sides[i].name, err)
					continue
				}
				if keepAlive {
					res[i].ka[r], res[i].kaP99[r] = w.RPS, ms(w.P99)
				} else {
					res[i].close[r], res[i].closeP99[r] = w.RPS, ms(w.P99)
				}
			}
		}
	}
	h, c, p := res[0], res[1], res[2]
	return section{
		Title: fmt.Sprintf("4. Node throughput: examples/node/server.js as %d workers", n),
		Intro: []string{fmt.Sprintf("wrk, %d thread(s), %d connections, %s per run, all three running side by side and taking turns, %d rounds with the order rotated. Medians; ratios are medians of the rounds' ratios. handoff's workers accept themselves, each on a socket of its own that the kernel steers new connections to (handoff's default, `--balance steer`; see 8 for the other modes); node cluster (round-robin, the default) and PM2 cluster mode accept in the master and pass each connection to a worker.",
			b.cfg.wrkThreads, b.cfg.conns, b.cfg.duration, b.cfg.rounds)},
		Header: []string{"load", sides[0].name, sides[1].name, sides[2].name, "handoff ÷ cluster", "handoff ÷ PM2"},
		Rows: [][]string{
			{"keep-alive, req/s", fmtRPS(median(h.ka)), fmtRPS(median(c.ka)), fmtRPS(median(p.ka)), fmtRatio(pairedRatio(h.ka, c.ka)), fmtRatio(pairedRatio(h.ka, p.ka))},
			{"new connection per request, req/s", fmtRPS(median(h.close)), fmtRPS(median(c.close)), fmtRPS(median(p.close)), fmtRatio(pairedRatio(h.close, c.close)), fmtRatio(pairedRatio(h.close, p.close))},
			{"keep-alive, p99", fmtMS(median(h.kaP99)), fmtMS(median(c.kaP99)), fmtMS(median(p.kaP99)), "", ""},
			{"new connection per request, p99", fmtMS(median(h.closeP99)), fmtMS(median(c.closeP99)), fmtMS(median(p.closeP99)), "", ""},
		},
		Notes: []string{fmt.Sprintf("All rounds, keep-alive req/s: handoff %s; cluster %s; PM2 %s. With keep-alive, how the %d connections happen to spread over handoff's workers varies from run to run (see 6).",
			fmtList(h.ka, fmtRPS), fmtList(c.ka, fmtRPS), fmtList(p.ka, fmtRPS), b.cfg.conns)},
	}
}

// ---- 5. footprint ----

func (b *bench) footprint(ctx context.Context) section {
	n := b.cfg.workers
	sides := []side{b.handoffHello(n, 0), b.handoffNode(n, 0), b.cluster(n, 0), b.pm2(n, 0)}
	type fp struct {
		srv                  server
		idleRSS, loadRSS     int64
		idleCPU              time.Duration
		loadCPU, loadWall    [2]time.Duration // keep-alive, new connections
		procs, threads, mThr int
		ok, loaded           bool
	}
	fps := make([]fp, len(sides))
	defer func() {
		for _, f := range fps {
			if f.srv != nil {
				f.srv.stop()
			}
		}
	}()
	for i, s := range sides {
		if !b.selected(s) {
			continue
		}
		logf("footprint: starting %s", s.name)
		srv, err := s.start(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.fail("footprint: %s: start: %v", s.name, err)
			}
			continue
		}
		fps[i].srv = srv
	}
	// Idle: every side at once, nothing else running.
	cpu0 := make([]time.Duration, len(fps))
	for i, f := range fps {
		if f.srv != nil {
			cpu0[i], _ = cpuTime(f.srv.masterPID())
		}
	}
	logf("footprint: idle for %s", b.cfg.idle)
	t0 := time.Now()
	pause(ctx, b.cfg.idle)
	idleWall := time.Since(t0)
	for i := range fps {
		f := &fps[i]
		if f.srv == nil {
			continue
		}
		m := f.srv.masterPID()
		c1, err1 := cpuTime(m)
		mem, err2 := procMem(m)
		if err1 != nil || err2 != nil {
			b.fail("footprint: %s: master %d: %v %v", sides[i].name, m, err1, err2)
			continue
		}
		tr := tree(m)
		f.idleCPU, f.idleRSS, f.mThr = c1-cpu0[i], mem.RSSKiB, mem.Threads
		f.procs, f.threads = tr.Procs, tr.Threads
		f.ok = true
	}
	// Under load: one side at a time, with keep-alive, then with a new
	// connection per request (which the cluster masters accept and pass on).
	for i := range fps {
		f := &fps[i]
		if !f.ok || ctx.Err() != nil {
			continue
		}
		logf("footprint: load on %s", sides[i].name)
		m := f.srv.masterPID()
		f.loaded = true
		for k, keepAlive := range []bool{true, false} {
			c0, _ := cpuTime(m)
			t0 := time.Now()
			r, err := b.wrk.run(ctx, b.wrkOpts(f.srv, keepAlive), nil)
			wall := time.Since(t0)
			c1, err1 := cpuTime(m)
			mem, err2 := procMem(m)
			if err == nil {
				err = checkRan(r)
			}
			if err != nil || err1 != nil || err2 != nil {
				b.fail("footprint: %s under load: %v %v %v", sides[i].name, err, err1, err2)
				f.loaded = false
				break
			}
			f.loadCPU[k], f.loadWall[k] = c1-c0, wall
			f.loadRSS = max(f.loadRSS, mem.RSSKiB)
		}
	}
	var rows [][]string
	for i, f := range fps {
		if !b.selected(sides[i]) {
			continue
		}
		if !f.ok {
			rows = append(rows, []string{sides[i].name, "did not run", "", "", "", "", ""})
			continue
		}
		loadKA, loadNew, loadRSS := "–", "–", "–"
		if f.loaded {
			loadKA = fmt.Sprintf("%.1f %%", 100*f.loadCPU[0].Seconds()/f.loadWall[0].Seconds())
			loadNew = fmt.Sprintf("%.1f %%", 100*f.loadCPU[1].Seconds()/f.loadWall[1].Seconds())
			loadRSS = fmtMiB(f.loadRSS)
		}
		rows = append(rows, []string{sides[i].name, fmtMiB(f.idleRSS),
			fmt.Sprintf("%d ms", f.idleCPU.Milliseconds()), loadKA, loadNew, loadRSS,
			fmt.Sprintf("%d", f.procs), fmt.Sprintf("%d / %d", f.mThr, f.threads)})
	}
	return section{
		Title:  "5. Footprint of the master",
		Intro:  []string{fmt.Sprintf("The master is handoff's `run` process, node cluster's primary, and PM2's God daemon (the cluster primary in PM2 cluster mode). Idle: all four sides running at once, untouched for %s; CPU is user+system time from /proc/PID/stat (10 ms resolution). Under load: wrk with %d connections for %s on one side at a time, keep-alive and then a new connection per request; CPU as a share of one core, RSS the larger of the two runs'.", idleWall.Round(time.Second), b.cfg.conns, b.cfg.duration)},
		Header: []string{"side", "master RSS idle", "master CPU idle", "master CPU, keep-alive load", "master CPU, new-connection load", "master RSS under load", "processes", "threads (master / all)"},
		Rows:   rows,
		Notes:  []string{"Goal: handoff idle CPU ≈ 0."},
	}
}

// spread renders per-worker counts as "1.23 (600 / 488)". Workers that
// served nothing count as 0.
func spread(per map[int]int64, workers []int, n int) string {
	counts := map[int]int64{}
	for p, c := range per {
		counts[p] = c
	}
	// Processes that were workers but never answered count as zero, as
	// long as there are fewer answering pids than workers.
	for _, p := range workers {
		if len(counts) >= n {
			break
		}
		if _, ok := counts[p]; !ok {
			counts[p] = 0
		}
	}
	var cs []int64
	for _, c := range counts {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i] > cs[j] })
	if len(cs) == 0 {
		return "no answers"
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmtCount(c)
	}
	r := "∞"
	if cs[len(cs)-1] > 0 {
		r = fmt.Sprintf("%.2f", float64(cs[0])/float64(cs[len(cs)-1]))
	}
	return fmt.Sprintf("%s (%s)", r, strings.Join(parts, " / "))
}

// ---- numbers ----

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median is the median of the non-zero values (zero marks a missing
// sample), or 0.
func median(xs []float64) float64 {
	var s []float64
	for _, x := range xs {
		if x != 0 {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return 0
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedRatio is the median over rounds of num[r]/den[r], for the rounds
// that have both.
func pairedRatio(num, den []float64) float64 {
	var rs []float64
	for r := range min(len(num), len(den)) {
		if num[r] != 0 && den[r] != 0 {
			rs = append(rs, num[r]/den[r])
		}
	}
	return median(rs)
}

func fmtRPS(f float64) string {
	if f == 0 {
		return "–"
	}
	return fmtCount(int64(f + 0.5))
}

func fmtCount(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtMS(f float64) string {
	switch {
	case f == 0:
		return "–"
	case f < 10 && f > -10:
		return fmt.Sprintf("%.2f ms", f)
	}
	return fmt.Sprintf("%.0f ms", f)
}

func fmtRatio(f float64) string {
	if f == 0 || f != f || f > 1e9 {
		return "–"
	}
	return fmt.Sprintf("%.2f", f)
}

func fmtMiB(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func fmtList(xs []float64, f func(float64) string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return strings.Join(parts, ", ")
}
