package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/workers"
)

// ---- 7. scale ----

// The scale part checks issue 8's cost goals: a reload costs the master no
// more than linear work in the number of workers, and the master adds
// little to the apps' own start.

// scaleGrowthSlack is how much worse than linear the growth may be: 8.5×
// for 8× the workers.
const scaleGrowthSlack = 8.5 / 8

// readyWorkers is how many workers the READY-to-READY comparison starts.
const readyWorkers = 2

// scaleWindow is the apps' drain window in this part: tiny, so that the
// master's own share shows.
const scaleWindow = time.Millisecond

// scaleBlock is what one worker count measured.
type scaleBlock struct {
	n int
	// Per reload, in ms: the master's serving_ms and duration_ms (from
	// the reload's start), the bench's request → reply, and the
	// master's CPU time.
	serving, gone, reply, cpu []float64
	// Per reload: the same number of apps started by the bench at once,
	// from the first exec to the last READY=1 (ms), and the master's
	// share: serving minus that.
	alone, share []float64
	// The master's CPU over all measured reloads, from its CPU clock and
	// from /proc/PID/stat (10 ms ticks), as a cross-check.
	clockTotal, statTotal time.Duration
	others                float64 // share of the machine's CPU other processes used meanwhile
	err                   string
}

func (b *bench) scale(ctx context.Context) section {
	blocks := make([]scaleBlock, len(b.cfg.scaleWorkers))
	for i, n := range b.cfg.scaleWorkers {
		blocks[i].n = n
		ok := b.use(ctx, "scale", b.handoffHello(n, scaleWindow), func(srv server) error {
			h, ok := srv.(*handoffServer)
			if !ok {
				return errors.New("not a handoff master")
			}
			return b.scaleReloads(ctx, h, &blocks[i])
		})
		if !ok && blocks[i].err == "" {
			blocks[i].err = "did not run"
		}
	}
	var rows [][]string
	for _, k := range blocks {
		if len(k.serving) > 0 {
			b.record(func(d *benchData) {
				d.Scale = append(d.Scale, scaleSeries{Workers: k.n, ServingMS: k.serving, GoneMS: k.gone, ShareMS: k.share, CPUMS: k.cpu, Others: k.others})
			})
		}
		if len(k.serving) == 0 {
			reason := k.err
			if reason == "" {
				reason = "did not run"
			}
			rows = append(rows, []string{strconv.Itoa(k.n), reason, "", "", "", "", "", "", ""})
			continue
		}
		rows = append(rows, []string{
			strconv.Itoa(k.n),
			fmtSpread(k.serving, fmtMS),
			fmtSpread(k.alone, fmtMS),
			fmtSpread(k.share, fmtMS),
			fmtSpread(k.gone, fmtMS),
			fmtSpread(k.reply, fmtMS),
			fmtSpread(k.cpu, fmtMS),
			fmtMS(quantile(k.cpu, 0.5) / float64(k.n)),
			fmtShare(k.others),
		})
	}
	// Growth from each worker count to the next.
	for i := 1; i < len(blocks); i++ {
		a, z := blocks[i-1], blocks[i]
		if len(a.serving) == 0 || len(z.serving) == 0 {
			continue
		}
		factor := float64(z.n) / float64(a.n)
		goal := factor * scaleGrowthSlack
		rows = append(rows, []string{
			fmt.Sprintf("growth %d → %d (%.0f×; goal ≤ %.1f×)", a.n, z.n, factor, goal),
			fmtGrowth(a.serving, z.serving, goal),
			fmtGrowth(a.alone, z.alone, goal),
			fmtGrowth(a.share, z.share, goal),
			fmtGrowth(a.gone, z.gone, goal),
			fmtGrowth(a.reply, z.reply, goal),
			fmtGrowth(a.cpu, z.cpu, goal),
			"", "",
		})
	}
	notes := []string{fmt.Sprintf("Goal: each growth at most %.4g× the growth in workers (8.5× for 8×): the master's work per reload no worse than linear in the workers.", scaleGrowthSlack)}
	for _, k := range blocks {
		if len(k.cpu) == 0 {
			continue
		}
		// The clock and the ticks disagree by up to two ticks (utime
		// and stime are each truncated) plus the read-out gap.
		if d := k.clockTotal - k.statTotal; d > 30*time.Millisecond || d < -30*time.Millisecond {
			notes = append(notes, fmt.Sprintf("%d workers: the master's CPU clock says %s over the reloads, /proc/PID/stat %s: the CPU figures for it are suspect.",
				k.n, k.clockTotal.Round(time.Millisecond), k.statTotal.Round(time.Millisecond)))
		}
		if k.others >= busyShare {
			notes = append(notes, fmt.Sprintf("**%s: other processes used %s of the machine's CPU meanwhile; these figures may be skewed by it.**", workersLabel(k.n), fmtShare(k.others)))
		}
	}
	reloads := table{
		Intro: []string{
			fmt.Sprintf("handoff + examples/hello with a %s drain window, no load. %d reloads per worker count (after one unmeasured warm-up when there are more than 2), each asked for with a `reload` request with wait on the control socket, one at a time. Each cell: median (first–third quartile).", scaleWindow, b.cfg.scaleReloads),
			"\"New generation serving\" and \"old generation gone\" are the master's own serving_ms and duration_ms (from the reload's start; workers retire one at a time). After each reload the bench starts as many instances of the same app itself, at once, each with a NOTIFY_SOCKET of its own, and times the first exec to the last READY=1: how long the apps take to start on these cores without handoff; the master's share is serving minus that, round by round, which is the part of a reload's time the master is answerable for (starting 64 Go programs at once on 2 cores takes more than 8 times as long as 8, with or without a master). \"request → reply\" is the bench's, until the reply that the reload is over. \"Master CPU\" is utime+stime of the master process alone (not its children, so not the workers nor the shim each worker's exec goes through), read from its CPU clock (ns; the same sum /proc/PID/stat fields 14 and 15 give in 10 ms ticks) before and after each reload. A growth cell is the ratio of the medians (in brackets: first quartile over third, third over first).",
		},
		Header: []string{"workers", "→ new generation serving", "the apps alone → all READY=1", "master's share of serving", "→ old generation gone", "request → reply", "master CPU per reload", "master CPU per worker", "others' CPU"},
		Rows:   rows,
		Notes:  notes,
	}
	return section{
		Title: fmt.Sprintf("7. Scale: a reload's cost at %s workers; the master's share at start", joinInts(b.cfg.scaleWorkers)),
		More:  []table{reloads, b.readyToReady(ctx)},
	}
}

// busyShare is the share of the machine's CPU other processes may use
// before figures are flagged as maybe skewed.
const busyShare = 0.05

func workersLabel(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}

// scaleReloads reloads h b.cfg.scaleReloads times and records each one.
func (b *bench) scaleReloads(ctx context.Context, h *handoffServer, k *scaleBlock) error {
	master := h.masterPID()
	if b.cfg.scaleReloads > 2 {
		if _, err := reloadWait(ctx, h.ctl); err != nil {
			return fmt.Errorf("warm-up reload: %w", err)
		}
	}
	st, err := h.status(ctx)
	if err != nil {
		return err
	}
	gen := st.Generation
	if len(st.Workers) != k.n {
		return fmt.Errorf("status shows %d workers, want %d", len(st.Workers), k.n)
	}
	foreign0, wall0 := b.e.reg.foreignCPU(), time.Now()
	stat0, err1 := cpuTime(master)
	clock0, err2 := processCPU(master)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	for r := 0; r < b.cfg.scaleReloads && ctx.Err() == nil; r++ {
		c0, err := processCPU(master)
		if err != nil {
			return err
		}
		t0 := time.Now()
		res, err := reloadWait(ctx, h.ctl)
		reply := time.Since(t0)
		if err != nil {
			return fmt.Errorf("reload %d: %w", r+1, err)
		}
		c1, err := processCPU(master)
		if err != nil {
			return err
		}
		gen++
		if res.Generation != gen {
			return fmt.Errorf("reload %d: reply for generation %d, want %d", r+1, res.Generation, gen)
		}
		k.serving = append(k.serving, float64(res.Serving.Microseconds())/1000)
		k.gone = append(k.gone, float64(res.Duration.Microseconds())/1000)
		k.reply = append(k.reply, ms(reply))
		k.cpu = append(k.cpu, ms(c1-c0))
		alone, err := b.aloneReady(ctx, k.n)
		if err != nil {
			return fmt.Errorf("after reload %d: %w", r+1, err)
		}
		k.alone = append(k.alone, ms(alone))
		k.share = append(k.share, k.serving[len(k.serving)-1]-ms(alone))
	}
	stat1, err1 := cpuTime(master)
	clock1, err2 := processCPU(master)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	k.statTotal, k.clockTotal = stat1-stat0, clock1-clock0
	other, _ := b.e.reg.foreignCPU().since(foreign0)
	k.others = other.Seconds() / (time.Since(wall0).Seconds() * float64(runtime.NumCPU()))
	logf("scale: %d workers: serving %s, gone %s, master CPU %s per reload (medians of %d)", k.n,
		fmtMS(quantile(k.serving, 0.5)), fmtMS(quantile(k.gone, 0.5)), fmtMS(quantile(k.cpu, 0.5)), len(k.cpu))
	return ctx.Err()
}

// reloadWait asks the master at ctl for a reload and waits for its end,
// as `handoff reload --wait` does.
func reloadWait(ctx context.Context, ctl string) (workers.ReloadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var r workers.ReloadResult
	resp, err := control.Do(ctx, ctl, control.Request{Cmd: "reload", Wait: true})
	if err != nil {
		return r, err
	}
	if !resp.OK {
		return r, fmt.Errorf("reload refused: %s", resp.Error)
	}
	if err := json.Unmarshal(resp.Result, &r); err != nil {
		return r, fmt.Errorf("reload: malformed reply: %w", err)
	}
	if !r.OK {
		return r, fmt.Errorf("reload to generation %d failed: %s", r.Generation, r.Error)
	}
	return r, nil
}

// ---- the master's share at start, READY to READY ----

// readyToReady compares, round by round, `handoff run --workers 2` from
// exec to its READY=1 with 2 instances of the same app started at once by
// the bench, from the first exec to the last READY=1.
func (b *bench) readyToReady(ctx context.Context) table {
	rounds := b.cfg.readyRounds
	if !b.selected(b.handoffHello(readyWorkers, scaleWindow)) {
		rounds = 0 // -sides left handoff out
	}
	var handoff, alone, diff []float64
	var errs []string
	foreign0, wall0 := b.e.reg.foreignCPU(), time.Now()
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		var th, ta time.Duration
		var err error
		for _, k := range order(2, r) {
			if err != nil {
				break
			}
			if k == 0 {
				th, err = b.handoffReady(ctx)
			} else {
				ta, err = b.aloneReady(ctx, readyWorkers)
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				b.fail("scale: READY to READY, round %d: %v", r+1, err)
				errs = append(errs, err.Error())
			}
			continue
		}
		handoff = append(handoff, ms(th))
		alone = append(alone, ms(ta))
		diff = append(diff, ms(th-ta))
	}
	t := table{
		Intro:  []string{fmt.Sprintf("**The master's share at start, READY to READY.** `handoff run --workers %d` with examples/hello, from its exec to its READY=1 on a NOTIFY_SOCKET the bench listens on (sent once its first generation serves), against %d instances of the same app started by the bench one right after the other, each with a NOTIFY_SOCKET of its own, from the first exec to the last READY=1. The instances alone bind 127.0.0.1:0 themselves: go-systemd ignores LISTEN_FDS without a LISTEN_PID equal to its pid, which a parent cannot know before the exec without a launcher process in between, and a launcher would cost more than the bind. Arrival times are the kernel's receive stamps (SO_TIMESTAMPNS). %d rounds, the two taking turns to go first; the master's share is each round's difference, then the median (first–third quartile).", readyWorkers, readyWorkers, rounds)},
		Header: []string{"rounds", "handoff run → READY=1", fmt.Sprintf("%d apps alone → all READY=1", readyWorkers), "master's share", "goal", "others' CPU"},
	}
	other, _ := b.e.reg.foreignCPU().since(foreign0)
	others := other.Seconds() / (time.Since(wall0).Seconds() * float64(runtime.NumCPU()))
	if len(diff) == 0 {
		t.Rows = [][]string{{"0", "did not run", "", "", "", ""}}
		return t
	}
	mark := "✗"
	if quantile(diff, 0.5) < 5 {
		mark = "✓"
	}
	t.Rows = [][]string{{strconv.Itoa(len(diff)), fmtSpread(handoff, fmtMS), fmtSpread(alone, fmtMS), fmtSpread(diff, fmtMS), "< 5 ms " + mark, fmtShare(others)}}
	if others >= busyShare {
		t.Notes = append(t.Notes, fmt.Sprintf("**Other processes used %s of the machine's CPU meanwhile; these figures may be skewed by it.**", fmtShare(others)))
	}
	if len(errs) > 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("%d round(s) failed, the first: %s.", len(errs), errs[0]))
	}
	return t
}

// handoffReady starts handoff with readyWorkers workers and times it from
// exec to READY=1.
func (b *bench) handoffReady(ctx context.Context) (time.Duration, error) {
	e := b.e
	name := e.name("ready-handoff")
	nl, err := listenNotify(filepath.Join(e.dir, name+".notify"))
	if err != nil {
		return 0, err
	}
	defer nl.close()
	args := []string{e.handoff, "run",
		"--listen", "http=tcp://127.0.0.1:0",
		"--workers", strconv.Itoa(readyWorkers),
		"--ready", "notify",
		"--ready-timeout", "20s",
		"--drain-timeout", "10s",
		"--control", filepath.Join(e.dir, name+".sock"),
		"--", e.hello[0], "-close-window", scaleWindow.String()}
	t0 := time.Now()
	p, err := e.reg.start(name, args, []string{"NOTIFY_SOCKET=" + nl.path})
	if err != nil {
		return 0, err
	}
	defer p.stop(syscall.SIGTERM, 15*time.Second)
	at, err := nl.wait(ctx, 30*time.Second, p.done)
	if err != nil {
		return 0, fmt.Errorf("handoff run: %w: %s", err, p.tail(5))
	}
	return at.Sub(t0), nil
}

// aloneReady starts n instances of examples/hello on their own
// and times them from the first exec to the last READY=1.
func (b *bench) aloneReady(ctx context.Context, n int) (time.Duration, error) {
	e := b.e
	nls := make([]*notifyListener, n)
	names := make([]string, n)
	for i := range nls {
		names[i] = e.name("ready-alone")
		nl, err := listenNotify(filepath.Join(e.dir, names[i]+".notify"))
		if err != nil {
			return 0, err
		}
		defer nl.close()
		nls[i] = nl
	}
	t0 := time.Now()
	procs := make([]*process, n)
	for i := range procs {
		argv := []string{e.hello[0], "-addr", "127.0.0.1:0", "-close-window", scaleWindow.String()}
		p, err := e.reg.start(names[i], argv, []string{"NOTIFY_SOCKET=" + nls[i].path})
		if err != nil {
			return 0, err
		}
		defer p.stop(syscall.SIGTERM, 10*time.Second)
		procs[i] = p
	}
	var last time.Duration
	for i, nl := range nls {
		at, err := nl.wait(ctx, 30*time.Second, procs[i].done)
		if err != nil {
			return 0, fmt.Errorf("hello alone: %w: %s", err, procs[i].tail(5))
		}
		last = max(last, at.Sub(t0))
	}
	return last, nil
}

// notifyListener is a fake NOTIFY_SOCKET: a unixgram socket that notes
// when the first READY=1 arrived.
type notifyListener struct {
	path  string
	conn  *net.UnixConn
	ready chan time.Time // the first READY=1's arrival
	done  chan struct{}  // closed when the reader has returned
}

func listenNotify(path string) (*notifyListener, error) {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// Without kernel stamps, the reader's own clock will do.
	stamped := enableRecvTimestamps(c) == nil
	l := &notifyListener{path: path, conn: c, ready: make(chan time.Time, 1), done: make(chan struct{})}
	go l.read(stamped)
	return l, nil
}

func (l *notifyListener) read(stamped bool) {
	defer close(l.done)
	buf := make([]byte, 4096)
	oob := make([]byte, 256)
	sent := false
	for {
		n, oobn, _, _, err := l.conn.ReadMsgUnix(buf, oob)
		at := time.Now()
		if err != nil {
			return
		}
		if stamped {
			if t, err := recvTimestamp(oob[:oobn]); err == nil {
				at = t
			}
		}
		if !sent && hasReady(buf[:n]) {
			l.ready <- at
			sent = true
		}
	}
}

// wait returns when READY=1 arrived, or fails after timeout or once dead
// is closed (the process exited) without it.
func (l *notifyListener) wait(ctx context.Context, timeout time.Duration, dead <-chan struct{}) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-l.ready:
		return at, nil
	case <-dead:
		// It may have sent READY=1 just before it exited.
		select {
		case at := <-l.ready:
			return at, nil
		default:
		}
		return time.Time{}, errors.New("exited without READY=1")
	case <-t.C:
		return time.Time{}, fmt.Errorf("no READY=1 within %s", timeout)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

func (l *notifyListener) close() {
	l.conn.Close()
	<-l.done
	os.Remove(l.path)
}

// hasReady reports whether an sd_notify datagram says READY=1 (one
// assignment a line).
func hasReady(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		if string(line) == "READY=1" {
			return true
		}
	}
	return false
}

// ---- flags and numbers ----

// parseCounts parses a -scale-workers list: increasing worker counts,
// 1 to 256.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		if n < 1 || n > 256 {
			return nil, fmt.Errorf("%d workers: want 1 to 256", n)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("%d after %d: want increasing counts", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no worker count")
	}
	return out, nil
}

// growth is how much from grew into to: the ratio of the medians, and
// the range the quartiles allow (first quartile of to over third of
// from, and third over first).
func growth(from, to []float64) (mid, lo, hi float64) {
	mid = quantile(to, 0.5) / quantile(from, 0.5)
	lo = quantile(to, 0.25) / quantile(from, 0.75)
	hi = quantile(to, 0.75) / quantile(from, 0.25)
	return mid, lo, hi
}

// fmtGrowth renders a growth against its goal: "7.9× (7.2–8.8) ✓".
func fmtGrowth(from, to []float64, goal float64) string {
	mid, lo, hi := growth(from, to)
	if math.IsNaN(mid) || math.IsInf(mid, 0) || mid <= 0 {
		return "–"
	}
	mark := "✗"
	if mid <= goal {
		mark = "✓"
	}
	return fmt.Sprintf("%.1f× (%s–%s) %s", mid, fmtFactor(lo), fmtFactor(hi), mark)
}

func fmtFactor(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", f)
}

// fmtSpread renders the median and quartiles of xs: "12.3 ms (11.8 ms–13.1 ms)".
func fmtSpread(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	med := f(quantile(xs, 0.5))
	if len(xs) < 3 {
		return med
	}
	return fmt.Sprintf("%s (%s–%s)", med, f(quantile(xs, 0.25)), f(quantile(xs, 0.75)))
}

// fmtShare renders a share of the machine's CPU. Other processes' share
// counts the time of their children reaped meanwhile, which over a short
// window can add up to more than the machine had: shown as "> 100 %".
func fmtShare(f float64) string {
	if f > 1 {
		return "> 100 %"
	}
	return fmt.Sprintf("%.1f %%", 100*f)
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ", ")
}
