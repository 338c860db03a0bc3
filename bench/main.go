// Command bench measures handoff against the alternatives, side by side in
// one invocation, and prints markdown tables of medians and ratios:
//
//  1. overhead: examples/hello under handoff (1 worker) vs alone;
//  2. failed requests over many reloads under load (vegeta at a fixed rate
//     with keep-alive, wrk at saturation): handoff with examples/hello and
//     examples/node, Node's cluster module, PM2 cluster mode, and a plain
//     stop and start;
//  3. reload latency: trigger → new generation serving → old one gone;
//  4. Node throughput: handoff vs cluster vs PM2 workers;
//  5. the master's footprint, idle and under load;
//  6. balance: connections per worker for keep-alive connections opened
//     at once, with each --balance and --steer-bpf, Node's cluster and
//     PM2; requests per worker;
//  7. scale: a reload's time and the master's CPU at 1, 8 and 64
//     workers, and the master's share of the time to READY=1 at start;
//  8. steer: throughput of the steered modes against one shared socket,
//     keep-alive and a new connection per request;
//  9. sticky: the share of each client address's connections that reach
//     one worker, with --balance sticky, Node's cluster and PM2;
//  10. output: the master's CPU forwarding workers' output;
//  11. load (issue 16, load-aware steering): with one client looping on a
//     1 s request, the fast requests of two others (completed, p50/p90/
//     p99) on 4 single-threaded workers, gunicorn's sync worker and Node,
//     steered and shared under handoff, Node's cluster and PM2; then a
//     worker hung with SIGSTOP under strict load: failed requests, the
//     throughput each second after it, and whether it was replaced;
//  12. observers (issue 18): the master's CPU, with --admin and steady
//     load, with nobody watching, with `handoff top` (under a pty), with
//     one browser on the status page and with top and three browsers
//     (headless Chromium when installed, else the page's requests made
//     by the bench), paired round by round: what watching costs the
//     master, per browser too;
//  13. soak (issue 17; only when asked for with -parts): many reloads of
//     handoff + examples/hello under steady load from the bench's own
//     client; failed requests, and the master's open fds, goroutines,
//     threads, RSS, zombie children and processes before and after, none
//     of which may grow beyond a small tolerance for noise.
//
// The reload, balance, scale and load parts record the raw series behind
// their tables (requests per 100 ms across reloads, connections per worker
// per burst, per-reload times and CPU, fast requests' times); -data saves
// them as JSON, -plots DIR draws them as SVG files (and saves the data
// there too), and -plots-from redraws the plots from a saved file without
// measuring anything.
//
// It builds handoff and two versions of examples/hello itself. wrk and pm2
// must be installed: bench/setup.sh does that. The load part also runs
// gunicorn (examples/install-runtimes.sh installs it) with the apps in
// bench/apps/slow. bench/ is a Go module of its own (so that handoff's
// go.mod does not require vegeta); from the repository root:
//
//	bash bench/setup.sh
//	go -C bench run .              # everything: about 25 minutes on 2 quiet cores, 29 on busy ones
//	go -C bench run . -parts reload,latency -reloads 50
//	go -C bench run . -parts scale -scale-workers 1,8,64
//	go -C bench run . -parts balance,steer,sticky -steer-rounds 15
//	go -C bench run . -parts load -load-rounds 8   # about 12 minutes
//	go -C bench run . -parts observers -observers-rounds 10
//	go -C bench run . -smoke       # a quick check that every side runs
//	go -C bench run . -plots plots -data plots/bench-data.json   # all, with plots
//	go -C bench run . -plots-from plots/bench-data.json -plots plots
//	go -C bench run . -parts soak -soak-reloads 1000   # about 16 minutes (1 s a reload)
//	go -C bench run . -parts soak -soak-reloads 50     # under 2 minutes, for CI
//	go -C bench test ./...         # its unit tests
//
// All traffic goes to 127.0.0.1. Every process it starts is stopped when
// it ends, on failure and on SIGINT too.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parts are the measurements, in order, that run by default.
var parts = []string{"overhead", "reload", "latency", "node", "footprint", "balance", "scale", "steer", "sticky", "output", "load", "observers"}

// askedParts run only when -parts names them.
var askedParts = []string{"soak"}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

var logOut io.Writer = os.Stderr

func logf(format string, args ...any) {
	fmt.Fprintf(logOut, "bench: "+format+"\n", args...)
}

func run(args []string, stdout, stderr io.Writer) int {
	logOut = stderr
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	partsFlag := fs.String("parts", strings.Join(parts, ","), "measurements to run, comma-separated: "+strings.Join(parts, ", ")+"; and, only when named, "+strings.Join(askedParts, ", "))
	smoke := fs.Bool("smoke", false, "run every part briefly and at once, only to check that each side runs; exit 1 if one did not")
	cfg := config{args: args}
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds for throughput measurements (sides alternate; medians are reported)")
	fs.DurationVar(&cfg.duration, "duration", 4*time.Second, "length of one throughput or balance run")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "wrk warm-up before each throughput run (0: none)")
	fs.IntVar(&cfg.reloads, "reloads", 20, "reloads per side in the reload-under-load test")
	fs.DurationVar(&cfg.reloadGap, "reload-gap", 100*time.Millisecond, "traffic between two reloads")
	fs.IntVar(&cfg.rate, "rate", 1000, "vegeta's fixed rate, requests per second")
	fs.DurationVar(&cfg.idle, "idle", 60*time.Second, "how long the footprint test leaves the masters idle")
	fs.IntVar(&cfg.workers, "workers", runtime.NumCPU(), "workers per side (except the overhead test's 1)")
	fs.IntVar(&cfg.conns, "connections", 64, "wrk connections")
	fs.IntVar(&cfg.wrkThreads, "threads", 1, "wrk threads")
	fs.IntVar(&cfg.latencyReloads, "latency-reloads", 5, "reloads per side in the latency test")
	fs.DurationVar(&cfg.minUptime, "min-uptime", 0, "handoff's --min-uptime (its default, 1s, adds a probation of that length to every reload; the latency and scale figures are the master's own work)")
	scaleWorkers := fs.String("scale-workers", "1,8,64", "worker counts the scale test compares, increasing, comma-separated")
	fs.IntVar(&cfg.scaleReloads, "scale-reloads", 15, "reloads per worker count in the scale test")
	fs.IntVar(&cfg.readyRounds, "ready-rounds", 30, "rounds of the scale test's READY-to-READY comparison")
	fs.IntVar(&cfg.balanceWorkers, "balance-workers", 4, "workers per side in the balance and sticky parts")
	fs.IntVar(&cfg.balanceRounds, "balance-rounds", 10, "bursts of -connections keep-alive connections per side in the balance part")
	fs.IntVar(&cfg.steerRounds, "steer-rounds", 12, "rounds of the steer part (the sides take turns; 6 or more give a 95% interval for the ratios)")
	fs.DurationVar(&cfg.steerDuration, "steer-duration", time.Second, "length of one run in the steer part (whole seconds for wrk)")
	fs.IntVar(&cfg.stickyConns, "sticky-conns", 100, "connections from each client address in the sticky part")
	fs.IntVar(&cfg.loadWorkers, "load-workers", 4, "workers per side in the load part")
	fs.IntVar(&cfg.loadRounds, "load-rounds", 6, "rounds of the load part's slow requests (the sides take turns; 6 or more give a 95% interval for the ratios)")
	fs.DurationVar(&cfg.loadDuration, "load-duration", 10*time.Second, "length of one run of the load part's slow requests")
	fs.DurationVar(&cfg.loadSlow, "load-slow", time.Second, "how long the load part's /slow takes")
	fs.DurationVar(&cfg.hangBefore, "hang-before", 5*time.Second, "the load part's load before a worker hangs")
	fs.DurationVar(&cfg.hangAfter, "hang-after", 20*time.Second, "the load part's load after a worker hangs (whole seconds)")
	fs.IntVar(&cfg.hangRounds, "hang-rounds", 1, "runs per side with a hung worker (each side started fresh for each)")
	fs.IntVar(&cfg.soakReloads, "soak-reloads", 1000, "reloads in the soak part")
	fs.IntVar(&cfg.soakRate, "soak-rate", 400, "the soak part's load, requests per second in all")
	fs.IntVar(&cfg.observersRounds, "observers-rounds", 6, "rounds of the observers part (its four conditions take turns; 6 or more give a 95% interval)")
	fs.DurationVar(&cfg.observersWindow, "observers-window", 5*time.Second, "the observers part's measuring window, per condition and round")
	fs.IntVar(&cfg.observersRate, "observers-rate", 400, "the observers part's steady load, requests per second in all")
	fs.StringVar(&cfg.observersBrowser, "observers-browser", "auto", "what plays a browser in the observers part: chromium (headless), sse (the bench's client making the page's requests), or auto (chromium if installed)")
	dataPath := fs.String("data", "", "write the raw series behind the plots to this JSON `file`")
	plotsDir := fs.String("plots", "", "draw the plots as SVG files into this `directory` (with the data as "+plotDataFile+" unless -data is given)")
	plotsFrom := fs.String("plots-from", "", "measure nothing: draw the plots from this JSON `file` (saved with -data) into -plots (default plots)")
	sidesFlag := fs.String("sides", "", "only run the sides whose names contain one of these comma-separated words (e.g. handoff,pm2)")
	out := fs.String("o", "", "also write the report to this `file`")
	keep := fs.Bool("keep", false, "keep the scratch directory (logs, binaries) and print its path")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	selected := map[string]bool{}
	for _, p := range strings.Split(*partsFlag, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !contains(parts, p) && !contains(askedParts, p) {
			fmt.Fprintf(stderr, "bench: -parts: unknown part %q (want %s)\n", p, strings.Join(append(parts, askedParts...), ", "))
			return 2
		}
		selected[p] = true
	}
	for _, w := range strings.Split(*sidesFlag, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.only = append(cfg.only, w)
		}
	}
	var err error
	if cfg.scaleWorkers, err = parseCounts(*scaleWorkers); err != nil {
		fmt.Fprintf(stderr, "bench: -scale-workers: %v\n", err)
		return 2
	}
	if *smoke {
		cfg.scaleWorkers, cfg.scaleReloads, cfg.readyRounds = []int{1, 2}, 2, 2
		cfg.rounds, cfg.duration, cfg.warmup = 1, time.Second, 0
		cfg.reloads, cfg.reloadGap, cfg.idle, cfg.latencyReloads = 2, 100*time.Millisecond, time.Second, 1
		cfg.rate = min(cfg.rate, 200)
		cfg.balanceRounds, cfg.steerRounds, cfg.steerDuration, cfg.stickyConns = 2, 1, time.Second, 10
		cfg.loadRounds, cfg.loadDuration, cfg.hangBefore, cfg.hangAfter, cfg.hangRounds = 1, 2*time.Second, 2*time.Second, 3*time.Second, 1
		cfg.soakReloads = min(cfg.soakReloads, 5)
		cfg.observersRounds, cfg.observersWindow = 1, time.Second
		cfg.smoke = true
	}
	if err := checkConfig(cfg); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if *plotsFrom != "" {
		dir := *plotsDir
		if dir == "" {
			dir = "plots"
		}
		d, err := readData(*plotsFrom)
		if err == nil {
			err = drawPlots(d, dir, stdout)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, data, failures, err := benchmark(ctx, cfg, selected, *keep)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, rep)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(rep), 0o644); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
	}
	if *dataPath == "" && *plotsDir != "" {
		if err := os.MkdirAll(*plotsDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		*dataPath = filepath.Join(*plotsDir, plotDataFile)
	}
	if *dataPath != "" {
		if err := writeData(*dataPath, data); err != nil {
			fmt.Fprintf(stderr, "bench: -data: %v\n", err)
			return 1
		}
		logf("raw series written to %s", *dataPath)
	}
	if *plotsDir != "" {
		if err := drawPlots(data, *plotsDir, stderr); err != nil {
			fmt.Fprintf(stderr, "bench: -plots: %v\n", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "bench: interrupted")
		return 1
	}
	if len(failures) > 0 {
		fmt.Fprintf(stderr, "bench: %d failure(s):\n", len(failures))
		for _, f := range failures {
			fmt.Fprintf(stderr, "  - %s\n", f)
		}
		if *smoke || selected["soak"] {
			return 1
		}
	}
	return 0
}

func checkConfig(c config) error {
	switch {
	case c.rounds < 1 || c.rounds > 100:
		return errors.New("-rounds: want 1 to 100")
	case c.duration < time.Second || c.duration > 10*time.Minute:
		return errors.New("-duration: want 1s to 10m")
	case c.warmup < 0 || c.warmup > time.Minute:
		return errors.New("-warmup: want 0 to 1m")
	case c.reloads < 1 || c.reloads > 1000:
		return errors.New("-reloads: want 1 to 1000")
	case c.reloadGap < 0 || c.reloadGap > time.Minute:
		return errors.New("-reload-gap: want 0 to 1m")
	case c.rate < 1 || c.rate > 100000:
		return errors.New("-rate: want 1 to 100000")
	case c.idle < 0 || c.idle > time.Hour:
		return errors.New("-idle: want 0 to 1h")
	case c.workers < 1 || c.workers > 64:
		return errors.New("-workers: want 1 to 64")
	case c.conns < 1 || c.conns > 10000:
		return errors.New("-connections: want 1 to 10000")
	case c.wrkThreads < 1 || c.wrkThreads > c.conns:
		return errors.New("-threads: want 1 to -connections")
	case c.latencyReloads < 1 || c.latencyReloads > 1000:
		return errors.New("-latency-reloads: want 1 to 1000")
	case c.scaleReloads < 1 || c.scaleReloads > 1000:
		return errors.New("-scale-reloads: want 1 to 1000")
	case c.readyRounds < 1 || c.readyRounds > 1000:
		return errors.New("-ready-rounds: want 1 to 1000")
	case c.balanceWorkers < 1 || c.balanceWorkers > 64:
		return errors.New("-balance-workers: want 1 to 64")
	case c.balanceRounds < 1 || c.balanceRounds > 1000:
		return errors.New("-balance-rounds: want 1 to 1000")
	case c.steerRounds < 1 || c.steerRounds > 100:
		return errors.New("-steer-rounds: want 1 to 100")
	case c.steerDuration < time.Second || c.steerDuration > 10*time.Minute:
		return errors.New("-steer-duration: want 1s to 10m")
	case c.stickyConns < 1 || c.stickyConns > 10000:
		return errors.New("-sticky-conns: want 1 to 10000")
	case c.loadWorkers < 2 || c.loadWorkers > 64:
		return errors.New("-load-workers: want 2 to 64")
	case c.loadRounds < 1 || c.loadRounds > 100:
		return errors.New("-load-rounds: want 1 to 100")
	case c.loadDuration < time.Second || c.loadDuration > 10*time.Minute:
		return errors.New("-load-duration: want 1s to 10m")
	case c.loadSlow < 10*time.Millisecond || c.loadSlow > time.Minute:
		return errors.New("-load-slow: want 10ms to 1m")
	case c.hangBefore < 2*time.Second || c.hangBefore > 10*time.Minute:
		return errors.New("-hang-before: want 2s to 10m")
	case c.hangAfter < time.Second || c.hangAfter > 10*time.Minute || c.hangAfter%time.Second != 0:
		return errors.New("-hang-after: want whole seconds, 1s to 10m")
	case c.hangRounds < 1 || c.hangRounds > 100:
		return errors.New("-hang-rounds: want 1 to 100")
	case c.soakReloads < 1 || c.soakReloads > 100000:
		return errors.New("-soak-reloads: want 1 to 100000")
	case c.soakRate < 4 || c.soakRate > 100000:
		return errors.New("-soak-rate: want 4 to 100000")
	case c.observersRounds < 1 || c.observersRounds > 100:
		return errors.New("-observers-rounds: want 1 to 100")
	case c.observersWindow < time.Second || c.observersWindow > 10*time.Minute:
		return errors.New("-observers-window: want 1s to 10m")
	case c.observersRate < 4 || c.observersRate > 100000:
		return errors.New("-observers-rate: want 4 to 100000")
	case c.observersBrowser != "auto" && c.observersBrowser != "chromium" && c.observersBrowser != "sse":
		return fmt.Errorf("-observers-browser: %q: want auto, chromium or sse", c.observersBrowser)
	}
	return nil
}

// benchmark builds, runs the selected parts and renders the report.
func benchmark(ctx context.Context, cfg config, selected map[string]bool, keep bool) (string, *benchData, []string, error) {
	start := time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	dir, err := os.MkdirTemp("", "handoff-bench-")
	if err != nil {
		return "", nil, nil, fmt.Errorf("scratch directory: %w", err)
	}
	logDir := filepath.Join(dir, "logs")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return "", nil, nil, fmt.Errorf("scratch directory: %w", err)
	}
	reg := newRegistry(logDir)
	failed := false
	defer func() {
		reg.cleanup(10 * time.Second)
		if keep || failed {
			logf("logs and binaries kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	e := &env{reg: reg, dir: dir, root: root, nodeDir: filepath.Join(root, "examples", "node"), minUptime: cfg.minUptime}
	if err := build(ctx, e); err != nil {
		failed = true
		return "", nil, nil, err
	}
	if _, err := exec.LookPath("node"); err != nil {
		failed = true
		return "", nil, nil, fmt.Errorf("node not found: %w", err)
	}
	if _, err := exec.LookPath("systemd-notify"); err == nil {
		e.notify = true
	}
	if p := filepath.Join(root, "bench", ".npm", "bin", "pm2"); isExecutable(p) {
		e.pm2 = p
	} else if p, err := exec.LookPath("pm2"); err == nil {
		e.pm2 = p
	}
	b := &bench{e: e, cfg: cfg}
	if b.wrk, err = newWrkRunner(reg, dir); err != nil {
		b.fail("%v", err)
	}
	if e.pm2 == "" {
		b.fail("pm2 not found: run bench/setup.sh")
	}
	mi := machine(ctx, e)

	runs := []struct {
		name string
		f    func(context.Context) section
	}{
		{"overhead", b.overhead},
		{"reload", b.reloadUnderLoad},
		{"latency", b.reloadLatency},
		{"node", b.nodeThroughput},
		{"footprint", b.footprint},
		{"balance", b.balance},
		{"scale", b.scale},
		{"steer", b.steerThroughput},
		{"sticky", b.sticky},
		{"output", b.output},
		{"load", b.loadAware},
		{"observers", b.observers},
		{"soak", b.soak},
	}
	others := map[string]float64{}
	sections := make([]section, len(runs))
	if cfg.smoke {
		// Nothing is measured: run the parts at once to be quick.
		var wg sync.WaitGroup
		for i, r := range runs {
			if !selected[r.name] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sections[i] = r.f(ctx)
			}()
		}
		wg.Wait()
	} else {
		for i, r := range runs {
			if selected[r.name] && ctx.Err() == nil {
				logf("=== %s (%s so far)", r.name, time.Since(start).Round(time.Second))
				c0, t0 := reg.foreignCPU(), time.Now()
				sections[i] = r.f(ctx)
				other, who := reg.foreignCPU().since(c0)
				share := other.Seconds() / (time.Since(t0).Seconds() * float64(runtime.NumCPU()))
				others[r.name] = share
				note := fmt.Sprintf("Other processes on the machine used %.1f %% of its CPU during this part", 100*share)
				if len(who) > 0 && share >= 0.005 {
					note += " (mostly " + strings.Join(who, ", ") + ")"
				}
				note += "."
				if share >= 0.05 {
					note = "**" + note + " The numbers above may be skewed by it.**"
				}
				sections[i].Notes = append(sections[i].Notes, note)
			}
		}
	}
	b.mu.Lock()
	failures := append([]string(nil), b.failures...)
	failed = len(failures) > 0 || b.keepLogs
	b.mu.Unlock()
	killed := reg.sweep()
	if len(killed) > 0 {
		failures = append(failures, "processes left behind and killed: "+strings.Join(killed, "; "))
	}
	b.mu.Lock()
	data := b.data
	b.mu.Unlock()
	data.Command, data.Date, data.Smoke = commandLine(cfg.args), start, cfg.smoke
	if len(others) > 0 {
		data.Others = others
	}
	return render(mi, cfg, sections, failures, time.Since(start)), &data, failures, nil
}

// drawPlots draws d's plots into dir and says which files it wrote.
func drawPlots(d *benchData, dir string, w io.Writer) error {
	files, err := writePlots(d, dir)
	for _, f := range files {
		fmt.Fprintf(w, "bench: plot written to %s\n", f)
	}
	if len(files) == 0 && err == nil {
		fmt.Fprintln(w, "bench: no data for any plot (the reload, balance, scale and load parts record it)")
	}
	return err
}

// moduleRoot is the handoff module's directory, as the go command sees it
// from the working directory: the bench module's replace directive points
// it at the repository root (the bench itself lives in bench/, a module of
// its own so that the handoff module does not require vegeta).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", handoffModule).Output()
	root := strings.TrimSpace(string(out))
	if err != nil || root == "" {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("cannot find the handoff module from here (run the bench from the repository root as `go -C bench run .`): go list -m %s: %v", handoffModule, err)
	}
	if _, err := os.Stat(filepath.Join(root, "examples", "hello", "main.go")); err != nil {
		return "", fmt.Errorf("%s is not the handoff module: %w", root, err)
	}
	return root, nil
}

// handoffModule is the module the bench measures.
const handoffModule = "github.com/handoff-dev/handoff"

// build builds handoff and two versions of examples/hello into the
// scratch directory.
func build(ctx context.Context, e *env) error {
	logf("building handoff and examples/hello v1, v2")
	e.handoff = filepath.Join(e.dir, "handoff")
	targets := []struct{ out, pkg, ldflags string }{
		{e.handoff, ".", ""},
		{filepath.Join(e.dir, "hello-v1"), "./examples/hello", "-X main.version=v1"},
		{filepath.Join(e.dir, "hello-v2"), "./examples/hello", "-X main.version=v2"},
	}
	for _, t := range targets {
		args := []string{"build", "-o", t.out}
		if t.ldflags != "" {
			args = append(args, "-ldflags", t.ldflags)
		}
		args = append(args, t.pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = e.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	e.hello = [2]string{targets[1].out, targets[2].out}
	return nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// machineInfo describes where the bench ran.
type machineInfo struct {
	CPU, Kernel, Go, Node, Wrk, PM2 string
	Cores                           int
}

func machine(ctx context.Context, e *env) machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown", Kernel: "unknown",
		Node: "missing", Wrk: "missing", PM2: "missing"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(vctx, "node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	if out, _ := exec.CommandContext(vctx, "wrk", "-v").CombinedOutput(); bytes.HasPrefix(out, []byte("wrk ")) {
		m.Wrk = strings.Fields(string(out))[1]
	}
	if e.pm2 != "" {
		// pm2's own --version would start its daemon: read its package.
		pkg := filepath.Join(filepath.Dir(filepath.Dir(e.pm2)), "lib", "node_modules", "pm2", "package.json")
		if out, err := exec.CommandContext(vctx, "node", "-p", "require(process.argv[1]).version", pkg).Output(); err == nil {
			m.PM2 = strings.TrimSpace(string(out))
		} else {
			m.PM2 = "installed"
		}
	}
	return m
}

// render writes the report as markdown.
func render(m machineInfo, cfg config, sections []section, failures []string, took time.Duration) string {
	var b strings.Builder
	title := "handoff benchmark"
	if cfg.smoke {
		title += " (smoke: nothing here is a measurement)"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "Machine: %s, %d cores, %s; Go %s, Node %s, wrk %s, PM2 %s.\n", m.CPU, m.Cores, m.Kernel,
		strings.TrimPrefix(m.Go, "go"), m.Node, m.Wrk, m.PM2)
	fmt.Fprintf(&b, "The load generators (wrk, and vegeta inside this process) run on the same %d cores as the servers they measure, so absolute numbers are lower than on a separate client, and ratios are what to compare. All traffic is to 127.0.0.1.\n", m.Cores)
	fmt.Fprintf(&b, "Command, from the repository root: `%s`.\n", commandLine(cfg.args))
	fmt.Fprintf(&b, "Took %s.", took.Round(time.Second))
	if !cfg.smoke {
		fmt.Fprint(&b, " Each part ends with the share of the CPU that other processes on the machine used meanwhile.")
	}
	fmt.Fprintln(&b)
	for _, s := range sections {
		if s.Title == "" {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		for _, p := range s.Intro {
			fmt.Fprintf(&b, "%s\n\n", p)
		}
		if len(s.Header) > 0 {
			writeTable(&b, s.Header, s.Rows)
		}
		for i, t := range s.More {
			if i > 0 || len(s.Header) > 0 {
				fmt.Fprintln(&b)
			}
			for _, p := range t.Intro {
				fmt.Fprintf(&b, "%s\n\n", p)
			}
			writeTable(&b, t.Header, t.Rows)
			for _, n := range t.Notes {
				fmt.Fprintf(&b, "\n%s\n", n)
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "\n%s\n", n)
		}
	}
	if len(failures) > 0 {
		sort.Strings(failures)
		fmt.Fprintf(&b, "\n## Failures\n\n")
		for _, f := range failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
	}
	return b.String()
}

// commandLine is how to run the bench again with args, quoted for a
// POSIX shell where needed.
func commandLine(args []string) string {
	parts := []string{"go", "-C", "bench", "run", "."}
	for _, a := range args {
		if a == "" || strings.ContainsFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=.,/:+@%", r))
		}) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func writeTable(b *strings.Builder, header []string, rows [][]string) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
	line := func(cells []string) {
		b.WriteString("|")
		for i := range header {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString(" " + esc(c) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i := range header {
		if i == 0 {
			b.WriteString(" --- |")
		} else {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
}
