package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The parts about how connections reach workers (issue 9): balance
// (which worker each connection reaches), steer (throughput of the
// steered modes against one shared socket) and sticky (whether a client
// address keeps reaching one worker).

// roundRobinGoal is the largest max/min of connections per worker that
// exact round-robin may show (it should show 1.00).
const roundRobinGoal = 1.15

// steerGoal is the least throughput steer may have, as a share of the
// shared socket's.
const steerGoal = 0.98

// stickyGoal is the least share of a client address's connections that
// must reach one worker in sticky mode, outside reloads.
const stickyGoal = 0.99

// cpuWatch measures the share of the machine's CPU that other processes
// use from its start on.
type cpuWatch struct {
	reg *registry
	c0  cpuSnapshot
	t0  time.Time
}

func (b *bench) watchCPU() cpuWatch {
	return cpuWatch{reg: b.e.reg, c0: b.e.reg.foreignCPU(), t0: time.Now()}
}

// share is the other processes' share of the machine's CPU since w
// started.
func (w cpuWatch) share() float64 {
	other, _ := w.reg.foreignCPU().since(w.c0)
	wall := time.Since(w.t0).Seconds()
	if wall <= 0 {
		return 0
	}
	return other.Seconds() / (wall * float64(runtime.NumCPU()))
}

// othersCell renders others' share, in bold when it may skew the figures.
func othersCell(f float64) string {
	if f >= busyShare {
		return "**" + fmtShare(f) + "**"
	}
	return fmtShare(f)
}

// canEBPF reports whether handoff may load eBPF here: as root (CAP_BPF
// with CAP_NET_ADMIN would do too; the bench does not look for them).
// Elsewhere the sides that force eBPF are left out, with a note.
func canEBPF() bool { return os.Geteuid() == 0 }

// ---- 6. balance ----

// balanceSide is one side of the balance part and what to expect of it.
type balanceSide struct {
	s side
	// expect says how it spreads connections, for the table.
	expect string
	// chance is what a random deal gives, for hashing sides (0: none).
	chance float64
	// requests: the side also runs the per-request spread (vegeta, wrk).
	requests bool
}

// clusterDeal is how Node's cluster module (and PM2 cluster mode, which
// uses it) spreads connections: its "round-robin" hands the connections
// its master accepted, one at a time, to whichever worker has answered
// for its last one, so a worker that is slow to answer gets fewer.
const clusterDeal = "the master accepts; each connection to the next worker free (\"round-robin\")"

// balanceResult is what one side of the balance part measured.
type balanceResult struct {
	ratios     []float64 // max/min per round
	worst      []int     // per-worker counts of the round with the largest max/min
	worstRatio float64
	rounds     [][]int // every round's per-worker counts, for the plot
	label      string  // the side's name with its listener, for the plot
	selection  string  // handoff's listener: "steer (ebpf, round-robin)"
	exact      bool    // handoff steers round-robin: the goal applies
	vegeta     string
	wrk        string
	others     float64
}

func (b *bench) balance(ctx context.Context) section {
	n := b.cfg.balanceWorkers
	conns := b.cfg.conns
	hashChance := chanceMaxMin(conns, n, 20000)
	sides := []balanceSide{
		{s: b.handoffHelloBalanced(n, steerEBPF), expect: "round-robin in the kernel", requests: true},
		{s: b.handoffHelloBalanced(n, steerCBPF), expect: "hash of the client address and port", chance: hashChance, requests: true},
		{s: b.handoffHelloBalanced(n, stickyEBPF), expect: fmt.Sprintf("hash of the client address (%d addresses)", clientAddrs)},
		{s: b.handoffHelloBalanced(n, stickyCBPF), expect: fmt.Sprintf("hash of the client address (%d addresses)", clientAddrs)},
		{s: b.handoffHelloBalanced(n, sharedMode), expect: "one socket: whichever worker accepts first", requests: true},
		{s: b.handoffNode(n, 0), expect: "handoff's default (steer; eBPF where allowed)", requests: true},
		{s: b.cluster(n, 0), expect: clusterDeal, requests: true},
		{s: b.pm2(n, 0), expect: clusterDeal, requests: true},
	}
	if conns%clientAddrs == 0 {
		// Each address opens conns/clientAddrs connections: the deal
		// is of addresses.
		c := chanceMaxMin(clientAddrs, n, 20000)
		sides[2].chance, sides[3].chance = c, c
	}
	results := make([]balanceResult, len(sides))
	var notes []string
	for i, bs := range sides {
		if b.selected(bs.s) && bs.s.unavailable != "" {
			notes = append(notes, bs.s.name+": left out: "+bs.s.unavailable+".")
		}
		res := &results[i]
		w := b.watchCPU()
		b.use(ctx, "balance", bs.s, func(srv server) error {
			if h, ok := srv.(*handoffServer); ok {
				l := h.listener
				res.selection = l.Balance
				if l.Mechanism != "" {
					res.selection = fmt.Sprintf("%s (%s, %s)", l.Balance, l.Mechanism, l.Selection)
				}
				res.exact = l.Selection == "round-robin" || l.Selection == "least-held"
			}
			res.label = sideLabel(srv)
			addr := strings.TrimSuffix(strings.TrimPrefix(srv.url(), "http://"), "/")
			res.worstRatio = -1
			for r := 0; r < b.cfg.balanceRounds && ctx.Err() == nil; r++ {
				per, err := burst(ctx, addr, conns)
				if err != nil {
					return fmt.Errorf("round %d: %w", r+1, err)
				}
				counts := perWorker(per, n)
				ratio := maxMin(counts)
				res.ratios = append(res.ratios, ratio)
				res.rounds = append(res.rounds, counts)
				if ratio > res.worstRatio {
					res.worst, res.worstRatio = counts, ratio
				}
			}
			if !bs.requests {
				return nil
			}
			workers := srv.workerPIDs()
			v, err := runVegeta(ctx, vegetaOpts{URL: srv.url(), Rate: b.cfg.rate, Duration: b.cfg.duration, KeepAlive: false}, nil)
			if err == nil {
				err = checkRan(v)
			}
			if err != nil {
				return err
			}
			o := b.wrkOpts(srv, true)
			o.CountPIDs = true
			wr, err := b.wrk.run(ctx, o, nil)
			if err == nil {
				err = checkRan(wr)
			}
			if err != nil {
				return err
			}
			res.vegeta, res.wrk = spread(v.PerPID, workers, n), spread(wr.PerPID, workers, n)
			return nil
		})
		res.others = w.share()
	}

	var rows, reqRows [][]string
	var busy []string
	for i, bs := range sides {
		res := results[i]
		if !b.runs(bs.s) {
			continue
		}
		if len(res.rounds) > 0 {
			b.record(func(d *benchData) {
				d.Balance = append(d.Balance, balanceSeries{Side: res.label, Workers: n, Rounds: res.rounds})
			})
		}
		if res.others >= busyShare {
			busy = append(busy, fmt.Sprintf("%s (%s)", bs.s.name, fmtShare(res.others)))
		}
		others := othersCell(res.others)
		how := bs.expect
		if res.selection != "" {
			how += "; status: " + res.selection
		}
		if len(res.ratios) == 0 {
			rows = append(rows, []string{bs.s.name, how, "did not run", "", "", others})
		} else {
			goal := "–"
			med := quantile(res.ratios, 0.5)
			switch {
			case res.exact:
				mark := "✗"
				if med <= roundRobinGoal {
					mark = "✓"
				}
				goal = fmt.Sprintf("≤ %.2f %s", roundRobinGoal, mark)
			case bs.chance > 0:
				goal = fmt.Sprintf("none: a hash cannot beat chance (%s)", fmtMaxMin(bs.chance))
			}
			rows = append(rows, []string{
				bs.s.name, how,
				fmt.Sprintf("%s (%s–%s)", fmtMaxMin(med), fmtMaxMin(quantile(res.ratios, 0)), fmtMaxMin(quantile(res.ratios, 1))),
				fmtCounts(res.worst), goal, others,
			})
		}
		if bs.requests {
			v, w := res.vegeta, res.wrk
			if v == "" {
				v, w = "did not run", "did not run"
			}
			reqRows = append(reqRows, []string{bs.s.name, v, w})
		}
	}
	if len(busy) > 0 {
		notes = append(notes, "**Other processes used more than "+fmtShare(busyShare)+" of the machine's CPU while these sides ran; their figures may be skewed by it: "+strings.Join(busy, ", ")+".**")
	}
	conn := table{
		Intro: []string{
			fmt.Sprintf("**Connections per worker.** %d keep-alive connections opened at once (from %d client addresses, 127.0.0.2 to 127.0.0.%d, in turn), then one request on each once all are open; the pid in each answer says which worker has the connection. %d workers, %d rounds per side, each on fresh connections. Per round, the most connections any worker got over the fewest (∞: a worker got none); the median over the rounds (lowest–highest), and the counts of the round with the largest ratio.", conns, clientAddrs, 1+clientAddrs, n, b.cfg.balanceRounds),
			fmt.Sprintf("Goal: at most %.2f for exact round-robin (eBPF; expect 1.00 exactly). A hash spreads connections no better than chance: in brackets, the median max/min of the same connections dealt to the workers at random (a fixed-seed simulation); sticky modes hash the client address, so their deal is of the %d addresses.", roundRobinGoal, clientAddrs),
		},
		Header: []string{"side", "how it spreads", "max/min per round: median (lowest–highest)", "connections per worker, worst round", "goal", "others' CPU"},
		Rows:   rows,
		Notes:  notes,
	}
	reqs := table{
		Intro:  []string{fmt.Sprintf("**Requests per worker.** Counted from the pid in each answer, on the same sides. vegeta: %d req/s for %s, a new connection per request; wrk: %d keep-alive connections for %s, all from 127.0.0.1. max/min over the %d workers, then the counts.", b.cfg.rate, b.cfg.duration, conns, b.cfg.duration, n)},
		Header: []string{"side", "new connection per request (vegeta)", "keep-alive (wrk)"},
		Rows:   reqRows,
	}
	return section{
		Title: "6. Balance: connections and requests per worker",
		More:  []table{conn, reqs},
	}
}

// ---- 8. steer: throughput against the shared socket ----

func (b *bench) steerThroughput(ctx context.Context) section {
	n := b.cfg.workers
	modes := []balanceMode{steerEBPF, steerCBPF, stickyEBPF, sharedMode}
	var notes []string
	sides := make([]side, len(modes))
	for i, m := range modes {
		sides[i] = b.handoffHelloBalanced(n, m)
		if b.selected(sides[i]) && sides[i].unavailable != "" {
			notes = append(notes, sides[i].name+": left out: "+sides[i].unavailable+".")
		}
	}
	rounds := b.cfg.steerRounds
	// By side, load (0: keep-alive, 1: new connection per request) and
	// round; 0: no sample.
	rps := make([][2][]float64, len(sides))
	for i := range rps {
		rps[i] = [2][]float64{make([]float64, rounds), make([]float64, rounds)}
	}
	srvs, stopAll := b.startAll(ctx, "steer", sides)
	defer stopAll()
	for _, srv := range srvs {
		if srv != nil {
			b.warm(ctx, srv)
		}
	}
	var others []float64
	w := b.watchCPU()
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		rw := b.watchCPU()
		for load := range 2 {
			for _, i := range order(len(sides), r) {
				srv := srvs[i]
				if srv == nil {
					continue
				}
				var res loadResult
				var err error
				if load == 0 {
					o := b.wrkOpts(srv, true)
					o.Duration = b.cfg.steerDuration
					res, err = b.wrk.run(ctx, o, nil)
				} else {
					addr := strings.TrimSuffix(strings.TrimPrefix(srv.url(), "http://"), "/")
					res, err = connLoad(ctx, addr, b.cfg.conns, b.cfg.steerDuration)
				}
				if err == nil {
					err = checkRan(res)
				}
				if err != nil {
					if ctx.Err() == nil {
						b.fail("steer: %s: %v", sides[i].name, err)
					}
					continue
				}
				if res.Failed > 0 {
					notes = append(notes, fmt.Sprintf("%s, round %d, %s: %d of %d requests failed (%s).", sides[i].name, r+1, loadName(load), res.Failed, res.Requests, errorSummary(res.Errors)))
				}
				rps[i][load][r] = res.RPS
			}
		}
		others = append(others, rw.share())
	}
	total := w.share()
	shared := len(modes) - 1
	var rows [][]string
	for i, m := range modes {
		if !b.runs(sides[i]) {
			continue
		}
		row := []string{sides[i].name}
		for load := range 2 {
			row = append(row, fmtRPS(median(rps[i][load])))
			if i == shared {
				row = append(row, "")
				continue
			}
			row = append(row, ratioCell(rps[i][load], rps[shared][load], m.balance == "steer"))
		}
		rows = append(rows, row)
	}
	var busyRounds []string
	for r, o := range others {
		if o >= busyShare {
			busyRounds = append(busyRounds, fmt.Sprintf("%d (%s)", r+1, fmtShare(o)))
		}
	}
	if len(busyRounds) > 0 {
		notes = append(notes, fmt.Sprintf("**Other processes used more than %s of the machine's CPU in round(s) %s; the figures may be skewed by it.**", fmtShare(busyShare), strings.Join(busyRounds, ", ")))
	}
	for i, m := range modes[:shared] {
		if !b.runs(sides[i]) {
			continue
		}
		for load := range 2 {
			rs := roundRatios(rps[i][load], rps[shared][load])
			if len(rs) == 0 {
				continue
			}
			note := fmt.Sprintf("%s ÷ shared, %s, round by round: %s.", sides[i].name, loadName(load), fmtList(rs, fmtRatio))
			lo, hi, cov := medianCI(rs, 0.95)
			if m.balance == "steer" && cov >= 0.95 && goalAtLeast(lo, hi, steerGoal) == "unresolved" {
				if k := roundsToResolve(len(rs), lo, hi, quantile(rs, 0.5), steerGoal); k > 0 {
					note += fmt.Sprintf(" Unresolved: were the median to stay where it is, about %d rounds of this spread would resolve it (-steer-rounds).", k)
				} else {
					note += " Unresolved: the median sits on the goal."
				}
			}
			notes = append(notes, note)
		}
	}
	return section{
		Title: fmt.Sprintf("8. Steered vs shared socket: throughput, examples/hello as %d workers", n),
		Intro: []string{
			fmt.Sprintf("The same app under handoff with `--balance steer --steer-bpf ebpf`, `steer --steer-bpf cbpf`, `sticky --steer-bpf ebpf` and `shared`, all four running side by side and taking turns, %s with the order rotated, %s per run, %s. Keep-alive: wrk, %d thread(s), %d connections, all from 127.0.0.1 (so sticky puts them all on the one worker 127.0.0.1 hashes to). New connection per request: the bench's own closed-loop client, %d clients from %d client addresses (127.0.0.2 to 127.0.0.%d, so that sticky spreads them), each connecting, sending one request with `Connection: close`, reading the answer and the server's close, and starting over; every error counts, nothing is retried.", plural(rounds, "round"), b.cfg.steerDuration, warmText(b.cfg.warmup), b.cfg.wrkThreads, b.cfg.conns, b.cfg.conns, clientAddrs, 1+clientAddrs),
			fmt.Sprintf("req/s are medians over the rounds. Each ratio is the median of the rounds' ratios to shared (a round's runs are next to each other in time, which cancels drifts in the machine's load), with a distribution-free 95 %% confidence interval for it from the rounds' order statistics. Goal: steer at least %.2f× shared; ✓ when the whole interval is at or above it, ✗ when it is all below, \"unresolved\" when it straddles the goal (more rounds: -steer-rounds).", steerGoal),
		},
		Header: []string{"side", "keep-alive (wrk), req/s", "÷ shared: median (95 % CI)", "new connection per request, req/s", "÷ shared: median (95 % CI)"},
		Rows:   rows,
		Notes:  append(notes, fmt.Sprintf("Other processes on the machine used %s of its CPU during these rounds.", fmtShare(total))),
	}
}

// plural renders a count of things: "1 round", "9 rounds".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func warmText(d time.Duration) string {
	if d <= 0 {
		return "no warm-up"
	}
	return fmt.Sprintf("after a %s warm-up each (wrk, keep-alive)", d)
}

func loadName(load int) string {
	if load == 0 {
		return "keep-alive"
	}
	return "new connection per request"
}

// roundRatios are num[r]/den[r] for the rounds that have both.
func roundRatios(num, den []float64) []float64 {
	var rs []float64
	for r := range min(len(num), len(den)) {
		if num[r] != 0 && den[r] != 0 {
			rs = append(rs, num[r]/den[r])
		}
	}
	return rs
}

// ratioCell renders the paired ratio of num to den: "1.01 (0.99–1.02) ✓",
// judged against steerGoal when goal is set.
func ratioCell(num, den []float64, goal bool) string {
	rs := roundRatios(num, den)
	if len(rs) == 0 {
		return "–"
	}
	med := quantile(rs, 0.5)
	lo, hi, cov := medianCI(rs, 0.95)
	c := fmtRatio(med)
	if cov >= 0.95 {
		c += fmt.Sprintf(" (%s–%s)", fmtRatio(lo), fmtRatio(hi))
	} else {
		c += fmt.Sprintf(" (%s: too few for a 95 %% interval)", plural(len(rs), "round"))
	}
	if goal {
		if cov < 0.95 {
			lo, hi = math.NaN(), math.NaN()
		}
		c += fmt.Sprintf(" ≥ %.2f: %s", steerGoal, goalAtLeast(lo, hi, steerGoal))
	}
	return c
}

// ---- 9. sticky ----

func (b *bench) sticky(ctx context.Context) section {
	n := b.cfg.balanceWorkers
	per := b.cfg.stickyConns
	type stickySide struct {
		s      side
		sticky bool
	}
	sides := []stickySide{
		{b.handoffHelloBalanced(n, stickyEBPF), true},
		{b.handoffHelloBalanced(n, stickyCBPF), true},
		{b.cluster(n, 0), false},
		{b.pm2(n, 0), false},
	}
	var rows [][]string
	var notes, busy []string
	for _, ss := range sides {
		if !b.selected(ss.s) {
			continue
		}
		if ss.s.unavailable != "" {
			notes = append(notes, ss.s.name+": left out: "+ss.s.unavailable+".")
			continue
		}
		var counts addrCounts
		w := b.watchCPU()
		b.use(ctx, "sticky", ss.s, func(srv server) error {
			addr := strings.TrimSuffix(strings.TrimPrefix(srv.url(), "http://"), "/")
			var err error
			counts, err = stickyRun(ctx, addr, per)
			return err
		})
		others := w.share()
		if others >= busyShare {
			busy = append(busy, fmt.Sprintf("%s (%s)", ss.s.name, fmtShare(others)))
		}
		all, worst := stickyShare(counts)
		if math.IsNaN(all) {
			rows = append(rows, []string{ss.s.name, "did not run", "", "", "", "", othersCell(others)})
			continue
		}
		total := 0
		for _, p := range counts {
			for _, k := range p {
				total += k
			}
		}
		goal := fmt.Sprintf("not sticky: ~%s expected", fmtPct(1/float64(n)))
		if ss.sticky {
			mark := "✗"
			if worst >= stickyGoal {
				mark = "✓"
			}
			goal = fmt.Sprintf("≥ %s %s", fmtPct(stickyGoal), mark)
		}
		rows = append(rows, []string{ss.s.name, strconv.Itoa(total), fmtPct(all), fmtPct(worst),
			fmtCounts(addrsPerWorker(counts, n)), goal, othersCell(others)})
	}
	if len(busy) > 0 {
		notes = append(notes, "**Other processes used more than "+fmtShare(busyShare)+" of the machine's CPU while these sides ran; their figures may be skewed by it: "+strings.Join(busy, ", ")+".**")
	}
	return section{
		Title: "9. Sticky: does a client address keep reaching one worker?",
		Intro: []string{
			fmt.Sprintf("%d workers, no reload. From each of %d client addresses (127.0.0.2 to 127.0.0.%d, side by side), %d connections one after the other, one request each with `Connection: close`; the pid in each answer says which worker served it. For each address, the share of its connections that reached the worker it reached most; \"all\" adds those up over every connection, \"worst address\" is the smallest. \"Addresses per worker\" is how many addresses each worker got (a hash of %d addresses spreads them no better than chance).", n, clientAddrs, 1+clientAddrs, per, clientAddrs),
			fmt.Sprintf("Goal: with --balance sticky, every address at least %s on one worker (expect 100 %%). Node's cluster and PM2 deal connections round-robin whoever sends them: about 1/%d each.", fmtPct(stickyGoal), n),
		},
		Header: []string{"side", "connections", "share on one worker: all", "worst address", "addresses per worker", "goal", "others' CPU"},
		Rows:   rows,
		Notes:  notes,
	}
}
