package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
)

// Strategy is how a reload replaces workers.
type Strategy string

const (
	// Surge starts every new worker at once and retires the old ones
	// after all new ones are ready: at most 2N workers run.
	Surge Strategy = "surge"
	// Rolling replaces one worker at a time: at most N+1 workers run.
	Rolling Strategy = "rolling"
)

// Config is what a Supervisor runs.
type Config struct {
	// Command is the worker's argv. Command[0] is looked up in PATH and
	// resolved again for every generation.
	Command []string
	// Workers is the number of workers per generation.
	Workers int
	// Listeners are passed to every worker as fds 3, 4, … in order.
	Listeners []*upgrade.Listener
	// ReadyDelay, if set, marks a worker ready once it has been alive that
	// long. READY=1 on its notify socket always marks it ready.
	ReadyDelay time.Duration
	// ReadyTimeout is how long a worker may take to become ready.
	ReadyTimeout time.Duration
	// DrainTimeout is how long a worker may take to exit after the stop
	// signal before it is killed.
	DrainTimeout time.Duration
	// StopSignal asks a worker to drain and exit.
	StopSignal syscall.Signal
	// Strategy is how reloads replace workers.
	Strategy Strategy
	// RuntimeDir is a private (0700) directory for the workers' notify
	// sockets. If empty, a temporary one is made and removed on exit.
	RuntimeDir string
	// Environ is the base environment of every worker, before the
	// variables handoff sets. If nil, the master's own, cleaned.
	Environ []string
	// FirstGeneration is the number of the first generation (a new
	// master continues its predecessor's numbering). Zero means 1.
	FirstGeneration int
	// ReapOrphans makes the master reap every child, as pid 1 must.
	ReapOrphans bool
	// OnEvent, if set, is called on lifecycle events, one call at a time.
	OnEvent func(Event)
	// Logger receives the supervisor's logs.
	Logger hclog.Logger
}

// EventKind says what happened.
type EventKind int

// Lifecycle events, for sd_notify.
const (
	// EventServing: the first generation is ready.
	EventServing EventKind = iota + 1
	// EventReloading: a reload started.
	EventReloading
	// EventReloaded: a reload ended, well or not (Event.Reload says).
	EventReloaded
	// EventStopping: the master is stopping its workers.
	EventStopping
	// EventChanged: a worker changed state.
	EventChanged
)

// Event is passed to Config.OnEvent.
type Event struct {
	Kind       EventKind
	Generation int
	Reload     *ReloadResult
	Status     Status
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Generation int       `json:"generation"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	Started    time.Time `json:"started"`
	// ServingMS is the time from the reload's start until every new
	// worker was ready; DurationMS until the old generation was gone.
	ServingMS  float64 `json:"serving_ms"`
	DurationMS float64 `json:"duration_ms"`
}

// WorkerStatus describes one slot's worker, or its backoff.
type WorkerStatus struct {
	Slot       int       `json:"slot"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	State      State     `json:"state"`
	Since      time.Time `json:"since"`
	Restarts   int       `json:"restarts"`
	Status     string    `json:"status,omitempty"`
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Status is a snapshot of the supervisor.
type Status struct {
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	Generation int       `json:"generation"`
	Serving    bool      `json:"serving"`
	Reloading  int       `json:"reloading,omitempty"`
	// ReloadPending is set when a reload was asked for and has not
	// started yet (it waits for the running one).
	ReloadPending bool             `json:"reload_pending,omitempty"`
	Workers       []WorkerStatus   `json:"workers"`
	LastReload    *ReloadResult    `json:"last_reload"`
	Listeners     []ListenerStatus `json:"listeners"`
}

// Supervisor runs generations of workers: it keeps the serving one at
// full strength and replaces it on Reload.
type Supervisor struct {
	cfg     Config
	log     hclog.Logger
	procs   *procs
	devnull int
	environ []string
	seq     atomic.Int64
	started time.Time
	ownDir  bool

	killc    chan struct{}
	killOnce sync.Once

	handoverc    chan struct{}
	handoverOnce sync.Once
	pingc        chan chan struct{}
	changed      chan struct{} // poked on worker state changes
	rollMu       sync.Mutex    // held by the running rollover
	emitMu       sync.Mutex    // OnEvent calls never overlap

	reloadKick chan struct{}

	mu         sync.Mutex
	gens       []*generation // live generations, oldest first
	serving    *generation
	reloading  int
	lastGen    int  // highest generation number used; failed ones count
	finished   bool // Run has stopped or handed over every worker
	lastReload *ReloadResult
	isServing  bool
	waiters    []chan ReloadResult // reload requests not yet started
}

// New checks cfg and prepares a supervisor. Run starts it.
func New(cfg Config) (*Supervisor, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("no command to run")
	}
	if cfg.Workers < 1 {
		return nil, fmt.Errorf("workers must be at least 1, not %d", cfg.Workers)
	}
	if _, err := ResolveCommand(cfg.Command[0]); err != nil {
		return nil, err
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.Strategy == "" {
		cfg.Strategy = Surge
	}
	if cfg.FirstGeneration <= 0 {
		cfg.FirstGeneration = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Environ == nil {
		cfg.Environ = os.Environ()
	}
	s := &Supervisor{
		cfg:        cfg,
		log:        cfg.Logger,
		environ:    CleanEnv(cfg.Environ),
		killc:      make(chan struct{}),
		handoverc:  make(chan struct{}),
		pingc:      make(chan chan struct{}),
		changed:    make(chan struct{}, 1),
		reloadKick: make(chan struct{}, 1),
	}
	if s.cfg.RuntimeDir == "" {
		dir, err := os.MkdirTemp("", "handoff-")
		if err != nil {
			return nil, fmt.Errorf("runtime directory: %w", err)
		}
		s.cfg.RuntimeDir, s.ownDir = dir, true
	}
	if n := len(s.cfg.RuntimeDir) + len("/n0000000000.sock"); n >= 108 {
		s.cleanupDir()
		return nil, fmt.Errorf("runtime directory %s: path too long for notify sockets", s.cfg.RuntimeDir)
	}
	fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		s.cleanupDir()
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	s.devnull = fd
	return s, nil
}

func (s *Supervisor) cleanupDir() {
	if s.ownDir {
		os.RemoveAll(s.cfg.RuntimeDir)
	}
}

// Run starts the first generation and supervises until ctx is done, then
// stops every worker (see Kill) and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	s.started = time.Now()
	var orphans func(int, exitInfo)
	if s.cfg.ReapOrphans {
		orphans = func(pid int, e exitInfo) { s.log.Debug("reaped orphan", "pid", pid, "status", e.String()) }
	}
	s.procs = newProcs(orphans)
	defer func() {
		s.procs.close()
		unix.Close(s.devnull)
		s.cleanupDir()
	}()

	g, err := s.newGeneration(s.cfg.FirstGeneration, false)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lastGen = g.num
	s.gens = []*generation{g}
	s.serving = g
	s.mu.Unlock()
	s.log.Info("starting generation", "generation", g.num, "workers", s.cfg.Workers, "command", g.path)
	for _, sl := range g.slots {
		sl.start()
	}

	ready := g.readyAll()
	kick := s.reloadKick
	var reloadDone chan struct{}
	for {
		select {
		case <-ready:
			ready = nil
			s.markServing()
		case <-kick:
			// One rollover at a time: further requests wait in
			// s.waiters and the kick channel until this one ends.
			kick = nil
			reloadDone = make(chan struct{})
			go func(done chan struct{}) {
				defer close(done)
				s.rollMu.Lock()
				defer s.rollMu.Unlock()
				s.reload(ctx)
			}(reloadDone)
		case <-reloadDone:
			reloadDone, kick = nil, s.reloadKick
			if ready != nil && s.currentServing() != g {
				ready = nil
			}
		case <-s.changed:
			s.emit(Event{Kind: EventChanged})
		case c := <-s.pingc:
			close(c)
		case <-s.handoverc:
			if reloadDone != nil {
				<-reloadDone
			}
			s.retireAll()
			return nil
		case <-ctx.Done():
			if reloadDone != nil {
				<-reloadDone
			}
			s.shutdown()
			return nil
		}
	}
}

// Alive reports whether the supervision loop answers within ctx: the
// watchdog pings systemd only while it does.
func (s *Supervisor) Alive(ctx context.Context) error {
	c := make(chan struct{})
	select {
	case s.pingc <- c:
	case <-ctx.Done():
		return fmt.Errorf("supervision loop unresponsive: %w", ctx.Err())
	}
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervision loop unresponsive: %w", ctx.Err())
	}
}

// Exclusive runs fn while no rollover runs, and keeps rollovers from
// starting until it returns: a master upgrade is a rollover too.
func (s *Supervisor) Exclusive(fn func() error) error {
	s.rollMu.Lock()
	defer s.rollMu.Unlock()
	return fn()
}

// LastGeneration is the highest generation number used so far; a new
// master continues after it.
func (s *Supervisor) LastGeneration() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastGen
}

// Handover makes Run return after retiring every worker one at a time,
// without EventStopping: a new master has taken over the sockets and
// serves with its own workers.
func (s *Supervisor) Handover() {
	s.handoverOnce.Do(func() { close(s.handoverc) })
}

// retireAll retires every generation one worker at a time, as a reload
// retires the old generation.
func (s *Supervisor) retireAll() {
	s.log.Info("handed over to a new master: retiring workers one at a time")
	s.mu.Lock()
	gens := append([]*generation(nil), s.gens...)
	s.mu.Unlock()
	for _, g := range gens {
		g.retiring.Store(true)
		for _, sl := range g.slots {
			g.retireSlot(context.Background(), sl)
		}
	}
	s.failWaiters("master handed over to a new master before the reload ran")
	s.log.Info("all workers retired")
}

func (s *Supervisor) currentServing() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving
}

func (s *Supervisor) markServing() {
	s.mu.Lock()
	first := !s.isServing
	s.isServing = true
	gen := s.serving.num
	s.mu.Unlock()
	if first {
		s.log.Info("generation serving", "generation", gen)
		s.emit(Event{Kind: EventServing, Generation: gen})
	}
}

func (s *Supervisor) emit(e Event) {
	if s.cfg.OnEvent == nil {
		return
	}
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	e.Status = s.Status()
	s.cfg.OnEvent(e)
}

// Reload asks for a reload. Requests made while a reload runs are
// coalesced into one that starts when it ends. The returned channel
// receives the result of the reload that served this request.
func (s *Supervisor) Reload() <-chan ReloadResult {
	c := make(chan ReloadResult, 1)
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		c <- ReloadResult{Error: "master is no longer running workers"}
		return c
	}
	s.waiters = append(s.waiters, c)
	s.mu.Unlock()
	select {
	case s.reloadKick <- struct{}{}:
	default: // one is already pending
	}
	return c
}

// Kill makes a running shutdown kill workers at once instead of waiting
// for them to drain (a second SIGINT).
func (s *Supervisor) Kill() {
	s.killOnce.Do(func() { close(s.killc) })
}

func (s *Supervisor) reload(ctx context.Context) {
	s.mu.Lock()
	waiters := s.waiters
	s.waiters = nil
	s.lastGen++
	num := s.lastGen
	s.reloading = num
	s.mu.Unlock()

	s.log.Info("reload started", "generation", num, "strategy", string(s.cfg.Strategy))
	s.emit(Event{Kind: EventReloading, Generation: num})
	res := ReloadResult{Generation: num, Started: time.Now()}
	err := s.rollover(ctx, num, &res)
	res.DurationMS = msSince(res.Started)
	if err != nil {
		res.Error = err.Error()
		s.log.Error("reload failed, previous generation keeps serving", "generation", num, "error", err, "duration", time.Duration(res.DurationMS*1e6).Round(time.Millisecond).String())
	} else {
		res.OK = true
		s.log.Info("reload done", "generation", num, "serving_after", time.Duration(res.ServingMS*1e6).Round(time.Millisecond).String(), "duration", time.Duration(res.DurationMS*1e6).Round(time.Millisecond).String())
	}
	s.mu.Lock()
	s.reloading = 0
	s.lastReload = &res
	s.mu.Unlock()
	if res.OK {
		s.markServing()
	}
	s.emit(Event{Kind: EventReloaded, Generation: num, Reload: &res})
	for _, c := range waiters {
		c <- res
	}
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}

// rollover starts generation num and retires the serving one, or rolls
// back.
func (s *Supervisor) rollover(ctx context.Context, num int, res *ReloadResult) error {
	g, err := s.newGeneration(num, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.serving
	s.gens = append(s.gens, g)
	s.mu.Unlock()

	if s.cfg.Strategy == Rolling {
		return s.rolling(ctx, old, g, res)
	}
	for _, sl := range g.slots {
		sl.start()
	}
	if err := g.waitReady(ctx, g.slots); err != nil {
		if ctx.Err() != nil {
			// Stopping: shutdown stops this generation with the rest.
			return fmt.Errorf("master stopping: %w", err)
		}
		s.abandon(g)
		return err
	}
	res.ServingMS = msSince(res.Started)
	s.commit(old, g)
	for _, sl := range old.slots {
		if ctx.Err() != nil {
			return fmt.Errorf("master stopping: %w", ctx.Err())
		}
		old.retireSlot(ctx, sl)
	}
	s.forget(old)
	return nil
}

// rolling replaces the old generation one slot at a time. On failure the
// new workers are stopped and the old slots already retired are started
// again from the old generation's command.
func (s *Supervisor) rolling(ctx context.Context, old, g *generation, res *ReloadResult) error {
	for i, sl := range g.slots {
		sl.start()
		if err := g.waitReady(ctx, []*slot{sl}); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("master stopping: %w", err)
			}
			s.abandon(g)
			s.mu.Lock()
			for j := 0; j < i && j < len(old.slots); j++ {
				old.slots[j] = newSlot(old, j)
			}
			s.mu.Unlock()
			for j := 0; j < i && j < len(old.slots); j++ {
				old.slots[j].start()
			}
			return err
		}
		if i < len(old.slots) {
			old.retireSlot(ctx, old.slots[i])
		}
	}
	res.ServingMS = msSince(res.Started)
	s.commit(old, g)
	for _, sl := range old.slots[len(g.slots):] {
		old.retireSlot(ctx, sl)
	}
	s.forget(old)
	return ctx.Err()
}

// commit makes g the serving generation.
func (s *Supervisor) commit(old, g *generation) {
	g.probation.Store(false)
	old.retiring.Store(true)
	s.mu.Lock()
	s.serving = g
	s.mu.Unlock()
	s.log.Info("generation serving, retiring previous", "generation", g.num, "previous", old.num)
}

// abandon stops a generation that failed its rollout.
func (s *Supervisor) abandon(g *generation) {
	g.retiring.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	g.stop(ctx)
	s.forget(g)
}

func (s *Supervisor) forget(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i:i], s.gens[i+1:]...)
			return
		}
	}
}

// shutdown stops every worker of every generation at once: the stop
// signal, then up to the drain timeout, then SIGKILL.
func (s *Supervisor) shutdown() {
	s.log.Info("stopping workers", "drain_timeout", s.cfg.DrainTimeout.String())
	s.emit(Event{Kind: EventStopping})
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.killc:
			cancel()
		case <-ctx.Done():
		}
	}()
	s.mu.Lock()
	gens := append([]*generation(nil), s.gens...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, g := range gens {
		g.retiring.Store(true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.stop(ctx)
		}()
	}
	wg.Wait()
	s.failWaiters("master stopped before the reload ran")
	s.log.Info("all workers stopped")
}

func (s *Supervisor) failWaiters(why string) {
	s.mu.Lock()
	s.finished = true
	waiters := s.waiters
	s.waiters = nil
	s.mu.Unlock()
	for _, c := range waiters {
		c <- ReloadResult{OK: false, Error: why}
	}
}

// spawn starts one worker for slot i of g.
func (s *Supervisor) spawn(g *generation, i int) (*worker, error) {
	path := filepath.Join(s.cfg.RuntimeDir, fmt.Sprintf("n%d.sock", s.seq.Add(1)))
	ns, err := systemd.ListenNotify(path)
	if err != nil {
		return nil, err
	}
	files := []uintptr{uintptr(s.devnull), 1, 2}
	names := make([]string, len(s.cfg.Listeners))
	for j, l := range s.cfg.Listeners {
		files = append(files, uintptr(l.Fd()))
		names[j] = l.Name
	}
	env := append(s.environ[:len(s.environ):len(s.environ)],
		"NOTIFY_SOCKET="+path,
		fmt.Sprintf("HANDOFF_WORKER=%d", i),
		fmt.Sprintf("HANDOFF_GENERATION=%d", g.num),
		shimEnv+"="+g.path,
	)
	if len(names) > 0 {
		env = append(env,
			fmt.Sprintf("LISTEN_FDS=%d", len(names)),
			"LISTEN_FDNAMES="+strings.Join(names, ":"),
		)
	}
	p, err := s.procs.start("/proc/self/exe", g.argv, env, files)
	if err != nil {
		ns.Drain()
		for range ns.Datagrams() {
		}
		return nil, err
	}
	w := &worker{
		slot:         i,
		gen:          g.num,
		proc:         p,
		notify:       ns,
		log:          s.log.With("generation", g.num, "slot", i, "pid", p.pid),
		started:      time.Now(),
		readyDelay:   s.cfg.ReadyDelay,
		readyTimeout: s.cfg.ReadyTimeout,
		stopSignal:   s.cfg.StopSignal,
		readyc:       make(chan struct{}),
		donec:        make(chan struct{}),
		stopc:        make(chan struct{}),
		killc:        make(chan struct{}),
		changed:      s.changed,
		state:        Starting,
	}
	w.log.Info("worker starting")
	go w.run()
	return w, nil
}

// Status returns a snapshot of the supervisor.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{
		PID:           os.Getpid(),
		Started:       s.started,
		Serving:       s.isServing,
		Reloading:     s.reloading,
		ReloadPending: len(s.waiters) > 0,
	}
	if s.serving != nil {
		st.Generation = s.serving.num
	}
	if s.lastReload != nil {
		r := *s.lastReload
		st.LastReload = &r
	}
	gens := append([]*generation(nil), s.gens...)
	var slots []*slot
	for _, g := range gens {
		slots = append(slots, g.slots...)
	}
	s.mu.Unlock()
	st.Workers = []WorkerStatus{}
	for _, sl := range slots {
		if ws, ok := sl.snapshot(); ok {
			st.Workers = append(st.Workers, ws)
		}
	}
	sort.SliceStable(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		if a.Generation != b.Generation {
			return a.Generation < b.Generation
		}
		return a.Slot < b.Slot
	})
	for _, l := range s.cfg.Listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{Name: l.Name, Network: l.Network, Addr: l.Addr})
	}
	return st
}
