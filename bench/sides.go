package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// env is what every side needs: the built binaries, where to put files,
// and the process registry.
type env struct {
	reg     *registry
	dir     string // the run's scratch directory
	root    string // the module root
	handoff string // the handoff binary
	hello   [2]string
	nodeDir string // examples/node
	pm2     string // the pm2 CLI, "" if missing
	notify  bool   // systemd-notify is installed
	// minUptime is handoff's --min-uptime: a reload's probation after
	// READY=1, which lengthens every reload by itself.
	minUptime time.Duration

	mu  sync.Mutex
	seq int
}

// answerTimeout bounds how long a side that says it serves (or an app
// started alone) may take to answer its first request. A healthy one
// answers within milliseconds; the bound is for a machine that other work
// keeps busy (the smoke starts every side at once), where 10 s was seen
// to run out.
const answerTimeout = 30 * time.Second

// server is one side under test, started and serving.
type server interface {
	// label names the side in tables.
	label() string
	// url is where it serves.
	url() string
	// masterPID is the supervising process (0 for a plain process).
	masterPID() int
	// workerPIDs are the processes that serve.
	workerPIDs() []int
	// reload replaces the serving processes and returns once new ones
	// serve and the old ones are gone.
	reload(ctx context.Context) error
	// trigger starts a reload the way a user would (a signal or the
	// tool's command) and returns at once; wait returns when the command
	// used, if any, has finished.
	trigger(ctx context.Context) (wait func() error, err error)
	// stop stops the side and everything it started.
	stop()
}

func (e *env) name(prefix string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	return fmt.Sprintf("%s-%d", prefix, e.seq)
}

// ---- handoff ----

// handoffServer is handoff run with some app as its workers.
type handoffServer struct {
	e      *env
	lbl    string
	p      *process
	ctl    string
	addr   string
	swap   func() (string, error) // switches the app binary before a reload; returns the version to expect
	expect string
	// listener is the status of its listener: how it balances.
	listener workers.ListenerStatus
}

// balanceMode is a choice of handoff's --balance and --steer-bpf.
type balanceMode struct {
	name  string   // for the side's name: "steer, eBPF"
	flags []string // the flags for handoff run
	// balance and mechanism are what `handoff status` must then show
	// for the listener.
	balance, mechanism string
}

// The balance modes the bench compares; the zero balanceMode is
// handoff's default (--balance steer --steer-bpf auto).
var (
	steerEBPF  = balanceMode{"steer, eBPF", []string{"--balance", "steer", "--steer-bpf", "ebpf"}, "steer", "ebpf"}
	steerCBPF  = balanceMode{"steer, cBPF", []string{"--balance", "steer", "--steer-bpf", "cbpf"}, "steer", "cbpf"}
	stickyEBPF = balanceMode{"sticky, eBPF", []string{"--balance", "sticky", "--steer-bpf", "ebpf"}, "sticky", "ebpf"}
	stickyCBPF = balanceMode{"sticky, cBPF", []string{"--balance", "sticky", "--steer-bpf", "cbpf"}, "sticky", "cbpf"}
	sharedMode = balanceMode{"shared", []string{"--balance", "shared"}, "shared", ""}
)

// check reports whether st is the listener m asks for.
func (m balanceMode) check(st workers.ListenerStatus) error {
	if m.balance == "" {
		return nil
	}
	if st.Balance != m.balance || st.Mechanism != m.mechanism {
		return fmt.Errorf("asked for %s, status shows balance %q mechanism %q", strings.Join(m.flags, " "), st.Balance, st.Mechanism)
	}
	return nil
}

// handoffStatus is what `handoff status --json` prints: the master's own
// type, so the JSON field names cannot drift apart.
type handoffStatus = workers.Status

// startHandoff runs `handoff run` with n workers of cmd on a port the
// kernel picks, balanced as mode says, and waits until its status says
// serving.
func (e *env) startHandoff(ctx context.Context, lbl string, n int, ready string, mode balanceMode, cmd []string, appEnv []string) (*handoffServer, error) {
	name := e.name("handoff")
	ctl := filepath.Join(e.dir, name+".sock")
	args := []string{e.handoff, "run",
		"--listen", "http=tcp://127.0.0.1:0",
		"--workers", strconv.Itoa(n),
		"--ready", ready,
		"--ready-timeout", "20s",
		"--drain-timeout", "10s",
		"--min-uptime", e.minUptime.String(),
		"--control", ctl}
	args = append(args, mode.flags...)
	args = append(append(args, "--"), cmd...)
	p, err := e.reg.start(name, args, appEnv)
	if err != nil {
		return nil, err
	}
	h := &handoffServer{e: e, lbl: lbl, p: p, ctl: ctl}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := h.status(ctx)
		if err == nil && st.Serving && len(st.Listeners) > 0 {
			h.addr, h.listener = st.Listeners[0].Addr, st.Listeners[0]
			if err := mode.check(h.listener); err != nil {
				h.stop()
				return nil, fmt.Errorf("%s: %w", lbl, err)
			}
			break
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited: %s", lbl, p.tail(10))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h.stop()
			return nil, fmt.Errorf("%s: not serving within 30s (last: %v): %s", lbl, err, p.tail(10))
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := waitAnswering(ctx, h.url(), answerTimeout, p.done); err != nil {
		h.stop()
		return nil, fmt.Errorf("%s: %w", lbl, err)
	}
	return h, nil
}

func (h *handoffServer) status(ctx context.Context) (handoffStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := h.e.reg.run(ctx, []string{h.e.handoff, "status", "--json", "--control", h.ctl}, nil)
	if err != nil {
		return handoffStatus{}, err
	}
	var st handoffStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return handoffStatus{}, fmt.Errorf("handoff status: %w", err)
	}
	return st, nil
}

func (h *handoffServer) label() string  { return h.lbl }
func (h *handoffServer) url() string    { return "http://" + h.addr + "/" }
func (h *handoffServer) masterPID() int { return h.p.pid() }
func (h *handoffServer) workerPIDs() []int {
	return descendants(h.p.pid())
}

func (h *handoffServer) reload(ctx context.Context) error {
	if h.swap != nil {
		v, err := h.swap()
		if err != nil {
			return err
		}
		h.expect = v
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := h.e.reg.run(rctx, []string{h.e.handoff, "reload", "--wait", "--control", h.ctl}, nil); err != nil {
		return fmt.Errorf("%s: %w", h.lbl, err)
	}
	if h.expect != "" {
		a, err := probe(ctx, h.url(), 5*time.Second)
		if err != nil {
			return fmt.Errorf("%s: after reload: %w", h.lbl, err)
		}
		if a.Version != h.expect {
			return fmt.Errorf("%s: after reload answered version %s, want %s", h.lbl, a.Version, h.expect)
		}
	}
	return nil
}

func (h *handoffServer) trigger(ctx context.Context) (func() error, error) {
	if h.swap != nil {
		v, err := h.swap()
		if err != nil {
			return nil, err
		}
		h.expect = v
	}
	if err := h.p.signal(syscall.SIGHUP); err != nil {
		return nil, err
	}
	return func() error { return nil }, nil
}

func (h *handoffServer) stop() {
	h.p.stop(syscall.SIGTERM, 15*time.Second)
}

// helloSwapper makes a symlink that points at one build of examples/hello
// and returns the function that points it at the other one.
func (e *env) helloSwapper(name string) (path string, swap func() (string, error), err error) {
	path = filepath.Join(e.dir, name)
	cur := 0
	if err := os.Symlink(e.hello[0], path); err != nil {
		return "", nil, fmt.Errorf("app symlink: %w", err)
	}
	swap = func() (string, error) {
		cur = 1 - cur
		tmp := path + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(e.hello[cur], tmp); err != nil {
			return "", fmt.Errorf("app symlink: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", fmt.Errorf("app symlink: %w", err)
		}
		return versions[cur], nil
	}
	return path, swap, nil
}

// versions are the two builds of examples/hello.
var versions = [2]string{"v1", "v2"}

// startHandoffHello runs examples/hello under handoff, balanced as mode
// says, with lbl as its name; reloads alternate between its two builds.
func (e *env) startHandoffHello(ctx context.Context, lbl string, n int, closeWindow time.Duration, mode balanceMode) (*handoffServer, error) {
	app, swap, err := e.helloSwapper(e.name("hello-app"))
	if err != nil {
		return nil, err
	}
	cmd := []string{app}
	if closeWindow > 0 {
		cmd = append(cmd, "-close-window", closeWindow.String())
	}
	h, err := e.startHandoff(ctx, lbl, n, "notify", mode, cmd, nil)
	if err != nil {
		return nil, err
	}
	h.swap = swap
	h.expect = versions[0]
	return h, nil
}

// startHandoffNode runs examples/node/server.js under handoff.
func (e *env) startHandoffNode(ctx context.Context, n int, closeWindow time.Duration) (*handoffServer, error) {
	ready := "notify"
	if !e.notify {
		ready = "delay=1s"
	}
	appEnv := []string{"APP_VERSION=v1", "DRAIN_TIMEOUT_MS=5000", fmt.Sprintf("CLOSE_WINDOW_MS=%d", closeWindow.Milliseconds())}
	return e.startHandoff(ctx, fmt.Sprintf("handoff + node (%d)", n), n, ready, balanceMode{},
		[]string{"node", filepath.Join(e.nodeDir, "server.js")}, appEnv)
}

// ---- a plain process, stopped and started ----

// plainServer is examples/hello on its own listener. Its reload is a stop
// and a start of the other build on the same port.
type plainServer struct {
	e    *env
	lbl  string
	p    *process
	port int
	cur  int
	args []string
}

func (e *env) startPlain(ctx context.Context, lbl string, closeWindow time.Duration) (*plainServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &plainServer{e: e, lbl: lbl, port: port}
	if closeWindow > 0 {
		s.args = []string{"-close-window", closeWindow.String()}
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *plainServer) start(ctx context.Context) error {
	argv := append([]string{s.e.hello[s.cur], "-addr", fmt.Sprintf("127.0.0.1:%d", s.port)}, s.args...)
	p, err := s.e.reg.start(s.e.name("hello"), argv, nil)
	if err != nil {
		return err
	}
	s.p = p
	a, err := waitAnswering(ctx, s.url(), answerTimeout, p.done)
	if err != nil {
		p.stop(syscall.SIGKILL, 0)
		return fmt.Errorf("%s: %w: %s", s.lbl, err, p.tail(5))
	}
	if a.Version != versions[s.cur] {
		p.stop(syscall.SIGKILL, 0)
		return fmt.Errorf("%s: port %d answered version %s, want %s (another process on it?)", s.lbl, s.port, a.Version, versions[s.cur])
	}
	return nil
}

func (s *plainServer) label() string     { return s.lbl }
func (s *plainServer) url() string       { return fmt.Sprintf("http://127.0.0.1:%d/", s.port) }
func (s *plainServer) masterPID() int    { return 0 }
func (s *plainServer) workerPIDs() []int { return []int{s.p.pid()} }

func (s *plainServer) reload(ctx context.Context) error {
	s.p.stop(syscall.SIGTERM, 10*time.Second)
	s.cur = 1 - s.cur
	return s.start(ctx)
}

func (s *plainServer) trigger(ctx context.Context) (func() error, error) {
	done := make(chan error, 1)
	go func() { done <- s.reload(ctx) }()
	return func() error { return <-done }, nil
}

func (s *plainServer) stop() { s.p.stop(syscall.SIGTERM, 10*time.Second) }

// ---- Node's cluster module ----

// clusterServer is examples/node/cluster.js.
type clusterServer struct {
	e    *env
	lbl  string
	p    *process
	port int
	gen  int
}

func (e *env) startCluster(ctx context.Context, n int, closeWindow time.Duration) (*clusterServer, error) {
	return e.startClusterApp(ctx, fmt.Sprintf("node cluster (%d)", n), e.nodeDir, n, closeWindow, nil)
}

// startClusterApp runs dir/cluster.js (examples/node's, or one that
// forks another server.js) as lbl, with appEnv added to its environment.
func (e *env) startClusterApp(ctx context.Context, lbl, dir string, n int, closeWindow time.Duration, appEnv []string) (*clusterServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &clusterServer{e: e, lbl: lbl, port: port, gen: 1}
	p, err := e.reg.start(e.name("cluster"), []string{"node", filepath.Join(dir, "cluster.js")}, append([]string{
		fmt.Sprintf("PORT=%d", port), fmt.Sprintf("WORKERS=%d", n), "APP_VERSION=v1",
		fmt.Sprintf("CLOSE_WINDOW_MS=%d", closeWindow.Milliseconds()), "DRAIN_TIMEOUT_MS=5000",
	}, appEnv...))
	if err != nil {
		return nil, err
	}
	c.p = p
	if _, err := p.lines.waitFor(ctx, 0, 30*time.Second, "generation 1 serving"); err != nil {
		c.stop()
		return nil, fmt.Errorf("%s: %w: %s", c.lbl, err, p.tail(5))
	}
	if _, err := waitAnswering(ctx, c.url(), answerTimeout, p.done); err != nil {
		c.stop()
		return nil, fmt.Errorf("%s: %w", c.lbl, err)
	}
	return c, nil
}

func (c *clusterServer) label() string     { return c.lbl }
func (c *clusterServer) url() string       { return fmt.Sprintf("http://127.0.0.1:%d/", c.port) }
func (c *clusterServer) masterPID() int    { return c.p.pid() }
func (c *clusterServer) workerPIDs() []int { return descendants(c.p.pid()) }

func (c *clusterServer) reload(ctx context.Context) error {
	wait, err := c.trigger(ctx)
	if err != nil {
		return err
	}
	return wait()
}

// trigger sends SIGHUP; wait returns when the master says the old
// generation is retired.
func (c *clusterServer) trigger(ctx context.Context) (func() error, error) {
	from := c.p.lines.count()
	old := c.gen
	c.gen++
	if err := c.p.signal(syscall.SIGHUP); err != nil {
		return nil, err
	}
	return func() error {
		got, err := c.p.lines.waitFor(ctx, from, 60*time.Second,
			fmt.Sprintf("generation %d retired", old), "reload failed")
		if err != nil {
			return fmt.Errorf("%s: %w", c.lbl, err)
		}
		if got == "reload failed" {
			return fmt.Errorf("%s: reload failed: %s", c.lbl, c.p.tail(3))
		}
		return nil
	}, nil
}

func (c *clusterServer) stop() { c.p.stop(syscall.SIGTERM, 15*time.Second) }

// ---- PM2 ----

// pm2Server is examples/node/ecosystem.config.js under PM2 in cluster
// mode, with its own PM2_HOME so it touches nothing else.
type pm2Server struct {
	e    *env
	lbl  string
	home string
	app  string
	port int
	god  int
}

func (e *env) pm2Env(home string) []string {
	return []string{"PM2_HOME=" + home}
}

func (e *env) startPM2(ctx context.Context, n int, closeWindow time.Duration) (*pm2Server, error) {
	return e.startPM2App(ctx, fmt.Sprintf("PM2 cluster (%d)", n), e.nodeDir, n, closeWindow, nil)
}

// startPM2App runs dir/ecosystem.config.js under PM2 as lbl, with appEnv
// added to the environment pm2 start reads it in.
func (e *env) startPM2App(ctx context.Context, lbl, dir string, n int, closeWindow time.Duration, appEnv []string) (*pm2Server, error) {
	if e.pm2 == "" {
		return nil, errors.New("pm2 not installed (run bench/setup.sh)")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	name := e.name("pm2")
	s := &pm2Server{e: e, lbl: lbl, home: filepath.Join(e.dir, name), app: name, port: port}
	if err := os.MkdirAll(s.home, 0o755); err != nil {
		return nil, fmt.Errorf("pm2 home: %w", err)
	}
	env := append(e.pm2Env(s.home),
		"PM2_APP_NAME="+name, fmt.Sprintf("PORT=%d", port), fmt.Sprintf("WORKERS=%d", n), "APP_VERSION=v1",
		fmt.Sprintf("CLOSE_WINDOW_MS=%d", closeWindow.Milliseconds()), "DRAIN_TIMEOUT_MS=5000")
	env = append(env, appEnv...)
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, err = e.reg.run(sctx, []string{e.pm2, "start", filepath.Join(dir, "ecosystem.config.js")}, env)
	s.readGod()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: %w", s.lbl, err)
	}
	if s.god == 0 {
		s.stop()
		return nil, fmt.Errorf("%s: no daemon pid in %s", s.lbl, s.home)
	}
	// Serving once every instance has answered (round-robin spreads new
	// connections over them).
	seen := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < n {
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("%s: %d of %d instances answered within 30s", s.lbl, len(seen), n)
		}
		if a, err := probe(ctx, s.url(), time.Second); err == nil {
			seen[a.PID] = true
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return s, nil
}

func (s *pm2Server) readGod() {
	b, err := os.ReadFile(filepath.Join(s.home, "pm2.pid"))
	if err != nil {
		return
	}
	s.god, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	if s.god > 0 {
		// Its process title hides the marker: name it to the registry,
		// with its PM2_HOME, which its command line shows.
		s.e.reg.addDaemon(s.god, s.home)
	}
}

func (s *pm2Server) label() string     { return s.lbl }
func (s *pm2Server) url() string       { return fmt.Sprintf("http://127.0.0.1:%d/", s.port) }
func (s *pm2Server) masterPID() int    { return s.god }
func (s *pm2Server) workerPIDs() []int { return descendants(s.god) }

func (s *pm2Server) reload(ctx context.Context) error {
	wait, err := s.trigger(ctx)
	if err != nil {
		return err
	}
	return wait()
}

// trigger runs `pm2 reload`; wait returns when it has returned and the old
// instances are gone.
func (s *pm2Server) trigger(ctx context.Context) (func() error, error) {
	old := s.workerPIDs()
	done := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		_, err := s.e.reg.run(rctx, []string{s.e.pm2, "reload", s.app}, s.e.pm2Env(s.home))
		done <- err
	}()
	return func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("%s: %w", s.lbl, err)
		}
		if err := waitGone(ctx, old, 30*time.Second); err != nil {
			return fmt.Errorf("%s: %w", s.lbl, err)
		}
		return nil
	}, nil
}

func (s *pm2Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pids := s.workerPIDs()
	if s.god != 0 {
		pids = append(pids, s.god)
	}
	// pm2 kill returns before its daemon has exited: wait for it.
	if _, err := s.e.reg.run(ctx, []string{s.e.pm2, "kill"}, s.e.pm2Env(s.home)); err != nil {
		logf("%s: pm2 kill: %v", s.lbl, err)
	}
	if err := waitGone(ctx, pids, 15*time.Second); err != nil {
		logf("%s: %v; killing them", s.lbl, err)
		for _, p := range pids {
			if alive(p) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
}

// waitGone waits until none of pids is alive.
func waitGone(ctx context.Context, pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, p := range pids {
			if alive(p) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d old processes still alive after %s", left, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}
