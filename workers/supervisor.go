package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
)

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

// Kill makes a running shutdown kill workers at once instead of waiting
// for them to drain (a second SIGINT).
func (s *Supervisor) Kill() {
	s.killOnce.Do(func() { close(s.killc) })
}

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
