package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
)

// ---- observers (issue 18): what watching a master costs it ----
//
// One master with --admin and steady load; its CPU (the master process
// alone, from its CPU clock) over fixed windows, with nobody watching and
// with observers attached: `handoff top` under a pseudo-terminal, one
// browser on the status page, and top with three browsers. The
// conditions take turns within each round (rotated round by round), and
// each observed figure is compared with the unwatched one of its own
// round, so that drift over the run (the load, the machine) cancels.
//
// A browser is headless Chromium when it is installed: it loads the page
// and runs its script, which opens /events as an EventSource, exactly as
// a person's browser would. Its own CPU is measured apart (its process
// tree) and not billed to the master; it does load the machine, which is
// what a browser on the same host does too. Without Chromium (or with
// -observers-browser sse) a browser is the bench's own client making the
// page's requests: GET /, then GET /events?since=0 held open and read,
// reconnected as an EventSource would be. The page asks for nothing else:
// its style and script are inline, its icon a data: URL, and its
// Content-Security-Policy allows no other request.

// observersGoal is the most, in % of one core, that top and three
// browsers may add to the master's CPU (issue 18).
const observersGoal = 1.0

// observerSettle is how long observers run, once attached, before the
// window opens: their first requests (the page, the first full frames,
// top's first polls) are a start-up cost, not the steady one measured.
const observerSettle = 2 * time.Second

// observersTopInterval is `handoff top`'s --interval: its default.
const observersTopInterval = 500 * time.Millisecond

// observerCondition is one way of watching the master.
type observerCondition struct {
	name     string
	top      bool
	browsers int
}

// observerConditions are the part's conditions; the first is the
// baseline, nobody watching.
var observerConditions = []observerCondition{
	{"nobody watching", false, 0},
	{"`handoff top`", true, 0},
	{"1 browser on the status page", false, 1},
	{"`handoff top` + 3 browsers", true, 3},
}

// observer is something attached to the master for one window.
type observer interface {
	// cpu is the CPU time the observer has used so far (0 when it runs
	// inside the bench and cannot be told apart).
	cpu() time.Duration
	// gone says why the observer is no longer attached ("" while it
	// is): it exited, with the end of its output.
	gone() string
	stop()
}

// goneObservers is why any of obs is gone, "" if none is.
func goneObservers(obs []observer) string {
	var why []string
	for _, o := range obs {
		if w := o.gone(); w != "" {
			why = append(why, w)
		}
	}
	return strings.Join(why, "; ")
}

func (b *bench) observers(ctx context.Context) section {
	n := b.cfg.workers
	sec := section{Title: fmt.Sprintf("12. Observers (issue 18): what `handoff top` and browsers on the status page cost the master (%s)", workersLabel(n))}
	port, err := freePort()
	if err != nil {
		b.fail("observers: %v", err)
		return sec
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	browser, why := b.observerBrowser()
	conds := observerConditions
	rounds := b.cfg.observersRounds
	// cpu[c][r] is the master's CPU in condition c, round r, in % of one
	// core; own[c][r] the observers' own CPU, the same way.
	cpu := make([][]float64, len(conds))
	own := make([][]float64, len(conds))
	var busyRounds []string
	mode := balanceMode{name: "default", flags: []string{"--admin", admin}}
	name := fmt.Sprintf("handoff + hello (%d), --admin", n)
	s := side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startHandoffHello(ctx, name, n, 0, mode)
	}}
	var load *soakLoad
	ran := b.use(ctx, "observers", s, func(srv server) error {
		h := srv.(*handoffServer)
		if err := waitAdmin(ctx, admin); err != nil {
			return err
		}
		load = startSoakLoad(ctx, hostPort(srv.url()), b.cfg.observersRate)
		defer load.end()
		// One unmeasured window first: the load's connections, the
		// master's first status snapshots.
		pause(ctx, b.cfg.observersWindow)
		for r := 0; r < rounds && ctx.Err() == nil; r++ {
			w := b.watchCPU()
			for _, c := range order(len(conds), r) {
				master, obs, err := b.observedWindow(ctx, h, admin, conds[c], browser)
				if err != nil {
					return fmt.Errorf("round %d, %s: %w", r+1, conds[c].name, err)
				}
				cpu[c] = append(cpu[c], master)
				own[c] = append(own[c], obs)
			}
			if o := w.share(); o >= busyShare {
				busyRounds = append(busyRounds, fmt.Sprintf("%d (%s)", r+1, fmtShare(o)))
			}
			logf("observers: round %d of %d: master %s", r+1, rounds, fmtList(lastOf(cpu), fmtCorePct))
		}
		return nil
	})
	done := len(cpu[0])
	if !ran && done == 0 {
		sec.Rows = [][]string{{"did not run"}}
		sec.Header = []string{"condition"}
		return sec
	}
	if load != nil && load.failed.Load() > 0 {
		b.fail("observers: %d of %d requests of the load failed (%s)", load.failed.Load(), load.ok.Load()+load.failed.Load(), errorSummary(load.errs))
	}
	deltas := make([][]float64, len(conds))
	for c := range conds {
		deltas[c] = pairedDiff(cpu[c], cpu[0])
	}
	var rows [][]string
	for c, k := range conds {
		row := []string{k.name, fmtSpread(cpu[c], fmtCorePct)}
		if c == 0 {
			row = append(row, "", "", "")
		} else {
			lo, hi, cov := medianCI(deltas[c], 0.95)
			row = append(row, fmtDelta(quantile(deltas[c], 0.5)), fmtCI(lo, hi, cov), fmtList(deltas[c], fmtDelta))
		}
		ownCell := "–"
		// The bench's own clients' CPU is the bench's: not shown.
		if (k.top || k.browsers > 0) && (k.browsers == 0 || browser == "chromium") {
			ownCell = fmtCorePct(quantile(own[c], 0.5))
		}
		rows = append(rows, append(row, ownCell))
	}
	// Per browser: one browser against nobody, and the three browsers
	// against top alone, a third of it, round by round.
	iTop, iOne, iAll := 1, 2, 3
	three := make([]float64, 0, done)
	for r := range min(len(deltas[iAll]), len(deltas[iTop])) {
		three = append(three, (deltas[iAll][r]-deltas[iTop][r])/3)
	}
	perBrowser := func(name string, xs []float64) []string {
		lo, hi, cov := medianCI(xs, 0.95)
		return []string{name, "", fmtDelta(quantile(xs, 0.5)), fmtCI(lo, hi, cov), fmtList(xs, fmtDelta), ""}
	}
	// The page's frames are made once for all its streams, and only
	// while one is open: the first browser pays for them, each further
	// one for its own stream. Per round: the two browsers beyond the
	// first, from top + 3 browsers less top less one browser.
	further := make([]float64, 0, done)
	for r := range min(len(deltas[iAll]), len(deltas[iTop]), len(deltas[iOne])) {
		further = append(further, (deltas[iAll][r]-deltas[iTop][r]-deltas[iOne][r])/2)
	}
	rows = append(rows,
		perBrowser("one browser alone (1 browser − nobody)", deltas[iOne]),
		perBrowser("per browser, of three ((top + 3 browsers − top) / 3)", three),
		perBrowser("each browser beyond the first ((top + 3 browsers − top − 1 browser) / 2)", further))
	lo, hi, cov := medianCI(deltas[iAll], 0.95)
	mark := goalBelow(lo, hi, observersGoal)
	if cov < 0.95 {
		mark = "unresolved"
	}
	goal := fmt.Sprintf("Goal (issue 18): `handoff top` + 3 browsers add less than %s of one core to the master: %s (the interval of the median paired difference, %s, against %s).",
		fmtCorePct(observersGoal), mark, fmtCI(lo, hi, cov), fmtCorePct(observersGoal))
	if cov < 0.95 {
		goal += " Too few rounds for a 95 % interval: 6 or more give one."
	} else if mark == "unresolved" {
		if k := roundsToResolve(len(deltas[iAll]), lo, hi, quantile(deltas[iAll], 0.5), observersGoal); k > 0 {
			goal += fmt.Sprintf(" About %d rounds would resolve it (-observers-rounds).", k)
		}
	}
	sec.Intro = []string{
		fmt.Sprintf("handoff + examples/hello, %d workers, started with `--admin %s`, under the bench's own steady load of %d req/s (%d clients on a new connection per request, %d on keep-alive connections). The figure is the master's CPU (utime+stime of the master process alone, from its CPU clock) over a window of %s, as a share of one core. %s; in each, the four conditions take turns (rotated round by round), each observer attached afresh and given %s to settle before its window opens (and then until each used at most %s of CPU in a second, up to 20 s: Chromium's start); each observed window is compared with the unwatched one of the same round (Δ; the interval is the distribution-free 95 %% interval of the median Δ).",
			n, admin, b.cfg.observersRate, soakClients, soakClients, b.cfg.observersWindow, plural(done, "round"), observerSettle, observerQuiet),
		"`handoff top` runs under a pseudo-terminal (120×40, TERM=xterm-256color), polling the control socket every " + observersTopInterval.String() + " (its default) and redrawing. " + browserIntro(browser, why),
	}
	sec.Header = []string{"condition", "master CPU, median (quartiles)", "Δ median", "Δ 95 % interval", "Δ by round", "observers' own CPU"}
	sec.Rows = rows
	sec.Notes = append(sec.Notes, goal,
		"The status page's frames are made once for all open streams, and only while one is open: the first browser pays for making them, each further one for its own stream's writes, hence the three rows per browser.")
	if len(busyRounds) > 0 {
		sec.Notes = append(sec.Notes, fmt.Sprintf("**Other processes used more than %s of the machine's CPU in round(s) %s; the figures may be skewed by it (busy).**", fmtShare(busyShare), strings.Join(busyRounds, ", ")))
	}
	return sec
}

// observedWindow attaches the observers of c, lets them settle, and
// returns the master's CPU over one window and the observers' own, both
// in % of one core.
func (b *bench) observedWindow(ctx context.Context, h *handoffServer, admin string, c observerCondition, browser string) (master, own float64, err error) {
	var obs []observer
	defer func() {
		for _, o := range obs {
			o.stop()
		}
		// The next window starts with no stream open.
		if err == nil {
			err = waitStreams(ctx, admin, func(n int) bool { return n == 0 })
		}
	}()
	if c.top {
		t, err := b.startTop(ctx, h.ctl)
		if err != nil {
			return 0, 0, err
		}
		obs = append(obs, t)
	}
	for i := range c.browsers {
		br, err := b.startBrowser(ctx, browser, admin, i)
		if err != nil {
			return 0, 0, err
		}
		obs = append(obs, br)
	}
	if c.browsers > 0 {
		if err := waitStreams(ctx, admin, func(n int) bool { return n >= c.browsers }); err != nil {
			if why := goneObservers(obs); why != "" {
				err = fmt.Errorf("%w: %s", err, why)
			}
			return 0, 0, err
		}
	}
	pause(ctx, observerSettle)
	settleObservers(ctx, obs)
	pid := h.masterPID()
	m0, err := processCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	var o0 time.Duration
	for _, o := range obs {
		o0 += o.cpu()
	}
	t0 := time.Now()
	pause(ctx, b.cfg.observersWindow)
	wall := time.Since(t0)
	m1, err := processCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	var o1 time.Duration
	for _, o := range obs {
		o1 += o.cpu()
	}
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	if why := goneObservers(obs); why != "" {
		return 0, 0, fmt.Errorf("an observer left during the window: %s", why)
	}
	if c.browsers > 0 {
		// A browser whose stream broke during the window did not watch
		// all of it.
		if err := waitStreams(ctx, admin, func(n int) bool { return n >= c.browsers }); err != nil {
			return 0, 0, fmt.Errorf("after the window: %w", err)
		}
	}
	return corePct(m1-m0, wall), corePct(o1-o0, wall), nil
}

// observerQuiet is the CPU an observer may still use, in a second, once
// it has started: Chromium takes a few seconds of CPU to start, and that
// start is not what the window measures (nor should it load the machine
// while the master is measured).
const observerQuiet = 100 * time.Millisecond

// settleObservers waits, for at most 20 s, until no observer used more
// than observerQuiet of CPU in the last second.
func settleObservers(ctx context.Context, obs []observer) {
	if len(obs) == 0 {
		return
	}
	deadline := time.Now().Add(20 * time.Second)
	prev := make([]time.Duration, len(obs))
	for i, o := range obs {
		prev[i] = o.cpu()
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pause(ctx, time.Second)
		quiet := true
		for i, o := range obs {
			c := o.cpu()
			quiet = quiet && c-prev[i] <= observerQuiet
			prev[i] = c
		}
		if quiet {
			return
		}
	}
}

// observerBrowser picks the browser: "chromium" or "sse", and why when
// it is not what was asked for.
func (b *bench) observerBrowser() (string, string) {
	want := b.cfg.observersBrowser
	if want == "sse" {
		return "sse", ""
	}
	if b.chromium() != "" {
		return "chromium", ""
	}
	if want == "chromium" {
		b.fail("observers: -observers-browser chromium: no chromium, chromium-browser or google-chrome in PATH")
	}
	return "sse", "no Chromium in PATH"
}

// chromium is the path of a Chromium (or Chrome) binary, "" if none.
func (b *bench) chromium() string {
	for _, c := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

func browserIntro(browser, why string) string {
	if browser == "chromium" {
		return "A browser is headless Chromium (one instance, with a profile of its own, per browser) on the status page: it loads the page and runs its script, which follows /events; its own CPU (its process tree) is shown apart and not billed to the master, but it runs on the same cores."
	}
	s := "A browser is the bench's own client making the page's requests (the page makes no others: its style and script are inline, its icon a data: URL): GET /, then GET /events?since=0 held open and read, as the page's EventSource does; its CPU is the bench's and not shown."
	if why != "" {
		s += " (" + why + ".)"
	}
	return s
}

// ---- handoff top under a pseudo-terminal ----

type topObserver struct {
	cmd  *exec.Cmd
	tty  *os.File
	done chan struct{}
	tail *lastBytes // the end of what it drew
}

// startTop runs `handoff top` on the master's control socket under a
// pseudo-terminal and returns once it has drawn something.
func (b *bench) startTop(ctx context.Context, ctl string) (*topObserver, error) {
	cmd := exec.Command(b.e.handoff, "top", "--control", ctl, "--interval", observersTopInterval.String())
	cmd.Env = b.e.reg.environ([]string{"TERM=xterm-256color", "COLUMNS=120", "LINES=40"})
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		return nil, fmt.Errorf("handoff top under a pty: %w", err)
	}
	tail := &lastBytes{}
	t := &topObserver{cmd: cmd, tty: tty, done: make(chan struct{}), tail: tail}
	drew := make(chan struct{})
	go func() {
		// Read what top draws, as a terminal would, answering its
		// queries (without answers it waits for them), keeping the end
		// for an error message.
		buf := make([]byte, 32<<10)
		var q termQueries
		total := 0
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				tail.add(buf[:n])
				if r := q.replies(buf[:n]); len(r) > 0 {
					_, _ = tty.Write(r)
				}
				total += n
				if total >= topDrawn && total-n < topDrawn {
					close(drew)
				}
			}
			if err != nil {
				break
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(t.done)
	}()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-drew:
		return t, nil
	case <-t.done:
		err = fmt.Errorf("handoff top exited: %s", tail.String())
	case <-timer.C:
		err = errors.New("handoff top drew nothing within 20s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	t.stop()
	return nil, err
}

func (t *topObserver) gone() string {
	select {
	case <-t.done:
		return "handoff top exited: " + lastLines([]byte(t.tail.String()), 3)
	default:
		return ""
	}
}

func (t *topObserver) cpu() time.Duration {
	c, _ := cpuTime(t.cmd.Process.Pid)
	return c
}

// stop quits top as a person would (q), then kills it if it lingers.
func (t *topObserver) stop() {
	_, _ = t.tty.Write([]byte("q"))
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-t.done:
	case <-timer.C:
		// pty.Start makes it a session (and group) leader.
		_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
		<-t.done
	}
	t.tty.Close()
}

// topDrawn is how much top has written once it has drawn its first
// screen: more than its terminal queries and mode switches (a 120×40
// screen with a master's status is a few KB).
const topDrawn = 1024

// termQueries answers the queries a terminal program sends to learn
// about its terminal, as a dark xterm would: the background colour
// (OSC 11), the foreground colour (OSC 10), the cursor position (DSR 6)
// and the device attributes (DA1). A query may be split across two
// reads: the tail of the previous one is kept.
type termQueries struct{ carry []byte }

// termAnswers are the queries termQueries knows and its answers.
var termAnswers = []struct{ query, answer string }{
	{"\x1b]11;?", "\x1b]11;rgb:0000/0000/0000\x1b\\"},
	{"\x1b]10;?", "\x1b]10;rgb:ffff/ffff/ffff\x1b\\"},
	{"\x1b[6n", "\x1b[1;1R"},
	{"\x1b[c", "\x1b[?62;22c"},
	{"\x1b[0c", "\x1b[?62;22c"},
}

// termCarry is the longest query but one byte: what a read may end with
// of a query that the next read completes.
const termCarry = 7

// replies returns the answers to the queries in out (and to one that
// began at the end of the previous call), in the order they were asked.
func (q *termQueries) replies(out []byte) []byte {
	buf := append(q.carry, out...)
	old := len(q.carry)
	type hit struct {
		at     int
		answer string
	}
	var hits []hit
	for _, t := range termAnswers {
		for from := 0; ; {
			i := bytes.Index(buf[from:], []byte(t.query))
			if i < 0 {
				break
			}
			i += from
			// A query wholly inside the carry was answered before.
			if i+len(t.query) > old {
				hits = append(hits, hit{i, t.answer})
			}
			from = i + len(t.query)
		}
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].at < hits[b].at })
	var r []byte
	for _, h := range hits {
		r = append(r, h.answer...)
	}
	keep := min(len(buf), termCarry)
	q.carry = append([]byte(nil), buf[len(buf)-keep:]...)
	return r
}

// lastBytes keeps the last 2 KiB written to it.
type lastBytes struct {
	mu sync.Mutex
	b  []byte
}

func (l *lastBytes) add(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if len(l.b) > 2048 {
		l.b = append([]byte(nil), l.b[len(l.b)-2048:]...)
	}
}

func (l *lastBytes) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < ' ' && r != '\n' {
			return -1
		}
		return r
	}, string(l.b)))
}

// ---- browsers ----

// startBrowser puts browser i on the status page at admin.
func (b *bench) startBrowser(ctx context.Context, browser, admin string, i int) (observer, error) {
	if browser == "chromium" {
		return b.startChromium(admin, i)
	}
	return startSSEBrowser(ctx, admin), nil
}

type chromiumObserver struct{ p *process }

func (b *bench) startChromium(admin string, i int) (*chromiumObserver, error) {
	profile, err := os.MkdirTemp(b.e.dir, fmt.Sprintf("chromium-%d-", i))
	if err != nil {
		return nil, fmt.Errorf("chromium profile: %w", err)
	}
	argv := []string{b.chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--mute-audio",
		"--user-data-dir=" + profile, "http://" + admin + "/"}
	p, err := b.e.reg.start(b.e.name("chromium"), argv, nil)
	if err != nil {
		return nil, err
	}
	return &chromiumObserver{p: p}, nil
}

// cpu is the CPU time of Chromium's live process tree (a process that
// exited meanwhile takes its time with it; its renderers live as long as
// the page).
func (c *chromiumObserver) cpu() time.Duration {
	var total time.Duration
	for _, pid := range append([]int{c.p.pid()}, descendants(c.p.pid())...) {
		if t, err := cpuTime(pid); err == nil {
			total += t
		}
	}
	return total
}

func (c *chromiumObserver) gone() string {
	if c.p.exited() {
		return "chromium exited: " + c.p.tail(3)
	}
	return ""
}

func (c *chromiumObserver) stop() { c.p.stop(syscall.SIGTERM, 5*time.Second) }

// sseBrowser makes the status page's requests: GET /, then /events held
// open, reconnecting after 3 s (an EventSource's default) when it breaks.
type sseBrowser struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func startSSEBrowser(ctx context.Context, admin string) *sseBrowser {
	ctx, cancel := context.WithCancel(ctx)
	s := &sseBrowser{cancel: cancel, done: make(chan struct{})}
	client := &http.Client{Transport: &http.Transport{DisableCompression: false, MaxIdleConnsPerHost: 1}}
	base := "http://" + admin
	go func() {
		defer close(s.done)
		defer client.CloseIdleConnections()
		if err := readAll(ctx, client, base+"/", "text/html"); err != nil && ctx.Err() == nil {
			logf("observers: GET /: %v", err)
		}
		for ctx.Err() == nil {
			_ = readAll(ctx, client, base+"/events?since=0", "text/event-stream")
			pause(ctx, 3*time.Second)
		}
	}()
	return s
}

// readAll GETs url as a browser would and reads the body to its end.
func readAll(ctx context.Context, c *http.Client, url, accept string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", accept)
	if accept == "text/event-stream" {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

func (s *sseBrowser) cpu() time.Duration { return 0 }

// gone is "": the client reconnects as long as it runs.
func (s *sseBrowser) gone() string { return "" }

func (s *sseBrowser) stop() {
	s.cancel()
	<-s.done
}

// ---- helpers ----

// waitAdmin waits for the admin endpoint to answer (it may start after
// the status says serving).
func waitAdmin(ctx context.Context, admin string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := scrapeGoroutines(ctx, admin)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("admin endpoint %s: %w", admin, err)
		}
		pause(ctx, 50*time.Millisecond)
	}
}

// waitStreams waits until the number of established connections to the
// admin endpoint (held open by its event streams) satisfies ok.
func waitStreams(ctx context.Context, admin string, ok func(int) bool) error {
	_, p, _ := strings.Cut(admin, ":")
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", admin, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	n := -1
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return fmt.Errorf("connections to the admin endpoint: %w", err)
		}
		if n = countEstablished(b, port); ok(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections held to the admin endpoint after 30s", n)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pause(ctx, 50*time.Millisecond)
	}
}

// countEstablished counts, in the text of /proc/net/tcp, the established
// connections whose local port is port: the server's side of its
// clients' connections.
func countEstablished(procNetTCP []byte, port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(procNetTCP))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ...
		if len(f) < 4 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		if strings.HasSuffix(f[1], want) && f[3] == "01" {
			n++
		}
	}
	return n
}

// pairedDiff is xs[r] − base[r] for the rounds both have.
func pairedDiff(xs, base []float64) []float64 {
	out := make([]float64, 0, min(len(xs), len(base)))
	for r := range min(len(xs), len(base)) {
		out = append(out, xs[r]-base[r])
	}
	return out
}

// goalBelow judges a measured figure against a bound it must stay under,
// from the median's confidence interval: "✓" when all of it is below,
// "✗" when all of it is at or above, "unresolved" otherwise.
func goalBelow(lo, hi, goal float64) string {
	switch {
	case math.IsNaN(lo) || math.IsNaN(hi):
		return "–"
	case hi < goal:
		return "✓"
	case lo >= goal:
		return "✗"
	}
	return "unresolved"
}

// corePct is d over wall as a percentage of one core.
func corePct(d, wall time.Duration) float64 {
	if wall <= 0 {
		return math.NaN()
	}
	return 100 * d.Seconds() / wall.Seconds()
}

// fmtCorePct renders a percentage of one core: "0.42 %".
func fmtCorePct(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.2f %%", f)
}

// fmtDelta renders a signed difference in % of one core: "+0.31 %".
func fmtDelta(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	s := fmt.Sprintf("%+.2f %%", f)
	return strings.Replace(s, "-", "−", 1)
}

// fmtCI renders a median's interval and, when it is less than asked
// for, the coverage it does have.
func fmtCI(lo, hi, coverage float64) string {
	if math.IsNaN(lo) || math.IsNaN(hi) {
		return "–"
	}
	s := fmtDelta(lo) + " to " + fmtDelta(hi)
	if coverage < 0.95 {
		s += fmt.Sprintf(" (%.0f %% coverage: too few rounds)", 100*coverage)
	}
	return s
}

// lastOf is the last value of each series that has one.
func lastOf(xss [][]float64) []float64 {
	var out []float64
	for _, xs := range xss {
		if len(xs) > 0 {
			out = append(out, xs[len(xs)-1])
		}
	}
	return out
}
