package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ---- soak (issue 17): many reloads under load, nothing may grow ----

// soakWarmup is how many reloads run, under the same load, before the
// "before" figures are taken: the first reloads create what a master then
// keeps for its life (its heap's working size, runtime threads for
// blocking calls, the exec shim's files), which is not growth.
const soakWarmup = 3

// soakSettle bounds the wait, once the load has stopped, for the master's
// figures to settle (in-flight connections closed, exited children
// reaped) before they are read.
const soakSettle = 10 * time.Second

// soakMeasure is one figure the soak compares before and after.
type soakMeasure struct {
	name string
	// tol is the growth allowed for noise; why is why.
	tol func(before float64) float64
	why string
	fmt func(float64) string
}

var soakMeasures = []soakMeasure{
	{"open fds (/proc/PID/fd)", func(float64) float64 { return 2 }, "the scrape's own admin connection may not be closed on the master's side yet, and a worker's output pipe may be between open and close; a leak of one fd per reload shows as one more per reload", fmtInt},
	{"goroutines (go_goroutines on --admin)", func(float64) float64 { return 5 }, "the scrape itself runs on a connection goroutine or two of the admin server, and timers of a reload just over may not have fired; a leak of one per reload shows as one more per reload", fmtInt},
	{"threads (/proc/PID/status)", func(float64) float64 { return 4 }, "the Go runtime adds threads for blocking system calls as needed and keeps them; their number is bounded by what runs at once, not by reloads", fmtInt},
	{"RSS", func(b float64) float64 { return max(0.2*b, 5*1024) }, "Go's collector lets the heap reach twice the live data before collecting and returns freed pages to the kernel lazily, so a steady master's RSS wanders by its heap's size: +20 % or 5 MiB, whichever is more (a leak of 5 KiB per reload over 1,000 reloads exceeds it)", func(f float64) string { return fmtMiB(int64(f)) }},
	{"zombie children (state Z under the master)", func(float64) float64 { return 0 }, "the master reaps every child; one that has just exited is a zombie for an instant, which the settle wait outlasts", fmtInt},
	{"processes under the master", func(float64) float64 { return 0 }, "the same workers (and their exec shims) as before", fmtInt},
}

func fmtInt(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }

// soakSample reads the soak's figures for the master pid, in
// soakMeasures' order.
func soakSample(ctx context.Context, pid int, admin string) ([]float64, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("open fds: %w", err)
	}
	g, err := scrapeGoroutines(ctx, admin)
	if err != nil {
		return nil, err
	}
	m, err := procMem(pid)
	if err != nil {
		return nil, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	z, procs := treeCounts(pid)
	return []float64{float64(len(ents)), g, float64(m.Threads), float64(m.RSSKiB), float64(z), float64(procs)}, nil
}

// treeCounts counts the zombies among the processes below pid (children
// that exited and were not reaped) and the live processes below it.
func treeCounts(pid int) (zombies, live int) {
	type proc struct {
		ppid   int
		zombie bool
	}
	all := map[int]proc{}
	for _, p := range allPIDs() {
		f, err := statFields(p)
		if err != nil || len(f) < 2 {
			continue
		}
		pp, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		all[p] = proc{pp, f[0] == "Z"}
	}
	under := func(p int) bool {
		for i := 0; i < 64 && p > 1; i++ {
			p = all[p].ppid
			if p == pid {
				return true
			}
		}
		return false
	}
	for p, info := range all {
		if !under(p) {
			continue
		}
		if info.zombie {
			zombies++
		} else {
			live++
		}
	}
	return zombies, live
}

// scrapeGoroutines reads go_goroutines from the master's /metrics (the
// Prometheus Go collector's gauge), on a connection of its own.
func scrapeGoroutines(ctx context.Context, admin string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("admin /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("admin /metrics: HTTP %d", resp.StatusCode)
	}
	return parseGauge(bufio.NewScanner(resp.Body), "go_goroutines")
}

// parseGauge finds an unlabelled sample of name in Prometheus's text
// format.
func parseGauge(sc *bufio.Scanner, name string) (float64, error) {
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseFloat(f[0], 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("admin /metrics: no %s", name)
}

// soakLoad is the soak's steady load: clients on new connections (one
// request each, the server closing) and clients on keep-alive connections
// (reconnecting when the server answers `Connection: close`), each paced
// at rate requests per second, until stop is closed.
type soakLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       map[string]int64
	wg         sync.WaitGroup
	stop       chan struct{}
}

// soakClients is how many clients of each kind the soak runs.
const soakClients = 2

func startSoakLoad(ctx context.Context, addr string, rate int) *soakLoad {
	l := &soakLoad{errs: map[string]int64{}, stop: make(chan struct{})}
	every := time.Second * time.Duration(2*soakClients) / time.Duration(max(rate, 1))
	for i := range 2 * soakClients {
		keepAlive := i%2 == 1
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			var c *hconn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			src := clientAddr(i)
			for {
				select {
				case <-ctx.Done():
					return
				case <-l.stop:
					return
				case <-t.C:
				}
				var err error
				if keepAlive {
					c, err = keepAliveGet(ctx, c, src, addr)
				} else {
					err = closeGet(ctx, src, addr)
				}
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs[classifyError(err.Error(), 0)]++
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// end stops the load and waits for its clients.
func (l *soakLoad) end() {
	close(l.stop)
	l.wg.Wait()
}

func closeGet(ctx context.Context, src net.IP, addr string) error {
	c, err := dialFrom(ctx, src, addr)
	if err != nil {
		return err
	}
	defer c.close()
	_, err = c.get(true)
	return err
}

// keepAliveGet sends one request on c (dialled first if nil) and returns
// the connection to use next: nil once the server has asked to close it
// or it failed.
func keepAliveGet(ctx context.Context, c *hconn, src net.IP, addr string) (*hconn, error) {
	if c == nil {
		var err error
		if c, err = dialFrom(ctx, src, addr); err != nil {
			return nil, err
		}
	}
	if err := c.send(reqKeepAlive); err != nil {
		c.close()
		return nil, err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.close()
		return nil, err
	}
	var buf [256]byte
	n, _ := resp.Body.Read(buf[:])
	_, cerr := bufio.NewReader(resp.Body).WriteTo(discard{})
	resp.Body.Close()
	if cerr != nil {
		c.close()
		return nil, cerr
	}
	if resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	} else if _, ok := parseAnswer(buf[:n]); !ok {
		err = errors.New("malformed answer")
	}
	if resp.Close {
		c.close()
		return nil, err
	}
	return c, err
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func (b *bench) soak(ctx context.Context) section {
	n := b.cfg.workers
	reloads := b.cfg.soakReloads
	title := fmt.Sprintf("Soak: %d reloads of handoff + examples/hello under steady load", reloads)
	sec := section{Title: title}
	port, err := freePort()
	if err != nil {
		b.fail("soak: %v", err)
		return sec
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	mode := balanceMode{name: "default", flags: []string{"--admin", admin}}
	name := fmt.Sprintf("handoff + hello (%d), --admin", n)
	s := side{name: name, start: func(ctx context.Context) (server, error) {
		return b.e.startHandoffHello(ctx, name, n, 0, mode)
	}}
	var rows [][]string
	var notes []string
	var load [2]*soakLoad // before, the soak
	var before []float64
	done := 0
	t0 := time.Now()
	var took time.Duration
	w := b.watchCPU()
	ran := b.use(ctx, "soak", s, func(srv server) error {
		h := srv.(*handoffServer)
		pid := h.masterPID()
		addr := hostPort(srv.url())
		// The admin endpoint may start after the status says serving.
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := scrapeGoroutines(ctx, admin)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("admin endpoint %s: %w", admin, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		load[0] = startSoakLoad(ctx, addr, b.cfg.soakRate)
		for i := range soakWarmup {
			if err := srv.reload(ctx); err != nil {
				load[0].end()
				return fmt.Errorf("warm-up reload %d: %w", i+1, err)
			}
			pause(ctx, b.cfg.reloadGap)
		}
		load[0].end()
		var err error
		before, err = settle(ctx, pid, admin, nil)
		if err != nil {
			return fmt.Errorf("before: %w", err)
		}
		load[1] = startSoakLoad(ctx, addr, b.cfg.soakRate)
		t0 = time.Now()
		var rerr error
		last := time.Now()
		for i := 0; i < reloads && ctx.Err() == nil; i++ {
			if rerr = srv.reload(ctx); rerr != nil {
				rerr = fmt.Errorf("reload %d of %d: %w", i+1, reloads, rerr)
				break
			}
			done++
			if time.Since(last) >= 10*time.Second {
				logf("soak: %d of %d reloads, %d failed requests so far", done, reloads, load[1].failed.Load())
				last = time.Now()
			}
			pause(ctx, b.cfg.reloadGap)
		}
		took = time.Since(t0)
		load[1].end()
		if rerr != nil {
			return rerr
		}
		after, err := settle(ctx, pid, admin, before)
		if err != nil {
			return fmt.Errorf("after: %w", err)
		}
		for i, m := range soakMeasures {
			grow := after[i] - before[i]
			tol := m.tol(before[i])
			mark := "✓"
			if grow > tol {
				mark = "✗"
				b.fail("soak: %s grew from %s to %s over %d reloads (tolerance +%s)", m.name, m.fmt(before[i]), m.fmt(after[i]), done, m.fmt(tol))
			}
			rows = append(rows, []string{m.name, m.fmt(before[i]), m.fmt(after[i]), fmtGrowthAbs(grow, m.fmt), "+" + m.fmt(tol), mark})
		}
		return nil
	})
	others := w.share()
	if len(rows) == 0 && before != nil {
		// Interrupted or failed after the figures before: show them.
		for i, m := range soakMeasures {
			rows = append(rows, []string{m.name, m.fmt(before[i]), "did not finish", "", "+" + m.fmt(m.tol(before[i])), ""})
		}
	}
	if !ran && len(rows) == 0 {
		rows = append(rows, []string{"did not run", "", "", "", "", ""})
	}
	var okN, failN int64
	errs := map[string]int64{}
	for _, l := range load {
		if l == nil {
			continue
		}
		okN += l.ok.Load()
		failN += l.failed.Load()
		for k, v := range l.errs {
			errs[k] += v
		}
	}
	fails := fmt.Sprintf("**%d** of %s", failN, fmtCount(okN+failN))
	if failN > 0 {
		fails += " (" + errorSummary(errs) + ")"
		b.fail("soak: %d of %d requests failed (%s)", failN, okN+failN, errorSummary(errs))
	}
	mark := "✓"
	if failN > 0 || done < reloads {
		mark = "✗"
	}
	notes = append(notes, fmt.Sprintf("Reloads done: %d of %d in %s (%s each on average, %s of load between them). Failed requests, warm-up included: %s %s.",
		done, reloads, took.Round(time.Second), avgDur(took, done), b.cfg.reloadGap, fails, mark))
	for _, m := range soakMeasures {
		notes = append(notes, fmt.Sprintf("Tolerance for %s: %s.", m.name, m.why))
	}
	if others >= busyShare {
		notes = append(notes, "Other processes were busy during the soak ("+fmtShare(others)+" of the CPU): that slows the reloads and the load, but the growth figures are counts, not times.")
	}
	sec.Intro = []string{fmt.Sprintf("handoff + examples/hello, %d workers, started with `--admin %s`; the bench's own client sends %d req/s in all from %d clients on a new connection per request and %d on keep-alive connections (reconnecting when the server answers `Connection: close`), nothing retried; every error and non-200 answer counts. %d unmeasured warm-up reloads under the same load first; then, with the load stopped and the master settled (in-flight connections closed, children reaped; polled for up to %s), the master's figures before; the %d reloads (`handoff reload --wait`, alternating two builds, %s of load between two); the figures after, the same way. Growth beyond the tolerance (below) is ✗.",
		n, admin, b.cfg.soakRate, soakClients, soakClients, soakWarmup, soakSettle, reloads, b.cfg.reloadGap)}
	sec.Header = []string{"the master's", "before", "after", "growth", "tolerance", ""}
	sec.Rows = rows
	sec.Notes = notes
	return sec
}

func avgDur(d time.Duration, n int) string {
	if n == 0 {
		return "–"
	}
	return fmtMS(ms(d / time.Duration(n)))
}

func fmtGrowthAbs(g float64, f func(float64) string) string {
	if g >= 0 {
		return "+" + f(g)
	}
	return "−" + f(-g)
}

// settle samples the master's figures every 100 ms until two samples in
// a row agree on the counts (fds, goroutines, threads, zombies,
// processes) and, if within is set, every figure is within its tolerance
// of it; or until soakSettle passes, then the last sample counts.
func settle(ctx context.Context, pid int, admin string, within []float64) ([]float64, error) {
	deadline := time.Now().Add(soakSettle)
	var prev []float64
	for {
		cur, err := soakSample(ctx, pid, admin)
		if err != nil {
			return nil, err
		}
		ok := prev != nil && cur[4] == 0
		if ok {
			for _, i := range []int{0, 1, 2, 4, 5} {
				ok = ok && cur[i] == prev[i]
			}
		}
		if ok && within != nil {
			for i, m := range soakMeasures {
				ok = ok && cur[i]-within[i] <= m.tol(within[i])
			}
		}
		if ok || time.Now().After(deadline) || ctx.Err() != nil {
			return cur, ctx.Err()
		}
		prev = cur
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
