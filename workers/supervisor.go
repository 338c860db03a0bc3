package workers

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/lograte"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/systemd"
)

// MasterPhase is where the master is in its life, as its supervisor sees
// it. Every change goes through Supervisor.setPhase.
type MasterPhase string

// The master moves starting → serving → stopping, or through upgrading
// (a new master is starting) back to serving (it failed) or to handed
// over (it serves; this master retires its workers and exits).
const (
	MasterStarting   MasterPhase = "starting"
	MasterServing    MasterPhase = "serving"
	MasterUpgrading  MasterPhase = "upgrading"
	MasterHandedOver MasterPhase = "handed over"
	MasterStopping   MasterPhase = "stopping"
)

// Supervisor runs generations of workers: it keeps the serving one at
// full strength and replaces it on Reload.
//
// One goroutine, Run's, owns all of its state, as tableflip's run loop
// does. Workers, timers and callers never touch that state: they post a
// function to it (post), and it alone decides restarts, backoff, a
// reload's probation, commit, rollback and retirement.
type Supervisor struct {
	cfg     Config
	log     hclog.Logger
	lim     *lograte.Limiter
	devnull int
	ownDir  bool
	starter starter
	mkStart func() starter // the seam: real processes, or tests' simulated ones
	env     env            // the seam to time and to blocking work
	usage   func(process) (rss int64, cpu float64)
	events  chan func()
	facts   []func() // recorded by workers' handlers, handled by settle
	refused int      // transitions refused (loop.go)
	// onRefused, if set, hears of each refused transition (the
	// simulator fails on one).
	onRefused func(string)
	giveUp    error         // the first generation could not start (Config.StartAttempts)
	done      chan struct{} // closed when Run has returned
	final     atomic.Pointer[Status]

	// Owned by Run's goroutine.
	phase          MasterPhase
	started        time.Time
	gens           []*generation // live generations, oldest first
	serving        *generation   // serves (before any has: the one starting)
	served         bool          // a generation has served
	op             operation     // what runs: a reload, a scale or a recycle
	queue          []*op         // reload requests waiting for their turn
	lastGen        int           // highest generation number used; failed ones count
	lastReload     *ReloadResult
	retireQueue    []*slot // slots whose workers wait to be retired
	retireDraining []*slot // slots whose workers are being retired
	killed         bool
	seq            int                           // names workers' notify sockets and cgroups
	dirty          bool                          // workers changed: EventChanged is due
	changePending  bool                          // an EventChanged is scheduled
	steerDirty     bool                          // routable workers may have changed: resteer is due
	allAway        bool                          // resteer: route to workers steered away too
	steered        map[steerGroup][]steer.Target // what each group was last told
	routedBy       map[steerGroup][]*worker      // the workers of those targets
	routed         map[*worker]bool              // workers getting new connections
	restarts       map[string]int
	reloads        map[string]int
	sampling       bool // a memory sample is being taken
}

// changeEvery spaces EventChanged events.
const changeEvery = 20 * time.Millisecond

// New checks cfg and prepares a supervisor. Run starts it.
func New(cfg Config) (*Supervisor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := ResolveCommand(cfg.Command[0]); err != nil {
		return nil, err
	}
	if cfg.Environ == nil {
		cfg.Environ = os.Environ()
	}
	s := &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger,
		lim:      lograte.New(float64(4*cfg.Workers+16), float64(cfg.Workers+10)), // a reload logs a few lines per worker
		events:   make(chan func()),
		done:     make(chan struct{}),
		phase:    MasterStarting,
		restarts: map[string]int{},
		reloads:  map[string]int{},
		usage:    treeUsage,
		steered:  map[steerGroup][]steer.Target{},
		routedBy: map[steerGroup][]*worker{},
		routed:   map[*worker]bool{},
	}
	s.env = realEnv{s}
	s.mkStart = func() starter {
		var orphans func(int, exitInfo)
		if cfg.ReapOrphans {
			orphans = func(pid int, e exitInfo) {
				s.lim.Log(s.log, hclog.Debug, "reaped orphan", "pid", pid, "status", e.String())
			}
		}
		return newProcs(s.log, orphans)
	}
	if s.cfg.RuntimeDir == "" {
		dir, err := makeRuntimeDir()
		if err != nil {
			return nil, err
		}
		s.cfg.RuntimeDir, s.ownDir = dir, true
	}
	if n := len(s.cfg.RuntimeDir) + len("/n0000000000-000000000000.sock"); n >= 108 {
		s.cleanupDir()
		return nil, fmt.Errorf("runtime directory %s: path too long for notify sockets", s.cfg.RuntimeDir)
	}
	if s.cfg.User != nil {
		// Workers of another user must reach their notify sockets, but
		// not list them.
		if err := os.Chmod(s.cfg.RuntimeDir, 0o711); err != nil {
			s.cleanupDir()
			return nil, fmt.Errorf("runtime directory: %w", err)
		}
	}
	fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		s.cleanupDir()
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	s.devnull = fd
	return s, nil
}

// release frees what the supervisor holds once Run is over.
func (s *Supervisor) release() {
	for _, g := range s.gens {
		g.closeExe()
	}
	unix.Close(s.devnull)
	s.cleanupDir()
}

func (s *Supervisor) cleanupDir() {
	if s.ownDir {
		os.RemoveAll(s.cfg.RuntimeDir)
	}
}

// Run starts the first generation and supervises until ctx is done, then
// stops every worker (stop signal, then SIGKILL after the drain timeout;
// see Kill) and returns. After a master upgrade it returns once every
// worker has been retired.
func (s *Supervisor) Run(ctx context.Context) error {
	s.starter = s.mkStart()
	defer func() {
		st := s.status(false)
		s.final.Store(&st)
		close(s.done)
		s.starter.close()
		s.release()
	}()
	if err := s.begin(); err != nil {
		return err
	}
	stop := ctx.Done()
	for !s.finished() {
		select {
		case fn := <-s.events:
			fn()
		case <-stop:
			stop = nil
			s.beginStop()
		}
		s.settle()
	}
	s.log.Info("all workers stopped")
	return s.giveUp
}

// begin starts the first generation.
func (s *Supervisor) begin() error {
	s.started = s.env.now()
	g, err := s.newGeneration(s.cfg.FirstGeneration, GenStarting)
	if err != nil {
		return err
	}
	s.lastGen = g.num
	s.gens = []*generation{g}
	s.serving = g
	s.log.Info("starting generation", "generation", g.num, "workers", s.cfg.Workers, "command", g.path)
	for _, sl := range g.slots {
		s.startWorker(sl)
	}
	if s.cfg.MaxMemory > 0 {
		s.scheduleMemory()
	}
	s.scheduleLiveness()
	s.settle()
	return nil
}

// scheduleMemory samples the workers' memory every memoryEvery.
func (s *Supervisor) scheduleMemory() {
	s.env.after(memoryEvery, func() {
		if s.finished() {
			return
		}
		s.sampleMemory()
		s.scheduleMemory()
	})
}

// fact records something that happened, to be handled once the handler
// that saw it has returned.
func (s *Supervisor) fact(fn func()) { s.facts = append(s.facts, fn) }

// settle runs after every event the loop handles: the facts it recorded,
// in order (each may record more), then what follows from all of them at
// once: steering, and the coalesced EventChanged.
func (s *Supervisor) settle() {
	for len(s.facts) > 0 {
		fn := s.facts[0]
		s.facts = s.facts[1:]
		fn()
	}
	s.facts = s.facts[:0]
	s.firstServes()
	if s.steerDirty {
		s.resteer()
	}
	if s.dirty && !s.changePending {
		// At most one EventChanged per changeEvery: building a status
		// costs O(workers), and a reload makes O(workers) changes.
		s.changePending = true
		s.env.after(changeEvery, func() {
			s.changePending, s.dirty = false, false
			s.emit(Event{Kind: EventChanged})
		})
	}
}

// firstServes makes the first generation serve once every slot it keeps
// is ready, whichever fact made it so: its last worker became ready, or a
// scale-down retired the slots that were not (the simulator found a
// generation left starting, its one remaining worker ready).
func (s *Supervisor) firstServes() {
	if s.phase == MasterStopping || s.phase == MasterHandedOver {
		return
	}
	for _, g := range s.gens {
		if g.phase == GenStarting && g.active > 0 && g.allReady() {
			g.transition(GenServing, "every worker is ready")
			s.nowServing(g)
			s.steerDirty = true
			s.advance()
		}
	}
}

// finished reports whether Run may return: the master stops or handed
// over, and nothing of it is left.
func (s *Supervisor) finished() bool {
	if s.phase != MasterStopping && s.phase != MasterHandedOver {
		return false
	}
	if s.rolling() != nil {
		return false // a reload or master upgrade ends, and answers, first
	}
	for _, g := range s.gens {
		if g.live() {
			return false
		}
	}
	return true
}

// post runs fn on Run's goroutine. It reports false, without running
// fn, once Run has returned. The channel is unbuffered: a function
// posted is one the loop took, and runs.
func (s *Supervisor) post(fn func()) bool {
	select {
	case s.events <- fn:
		return true
	case <-s.done:
		return false
	}
}

// Reload asks for a reload (or, with req.Master, a master upgrade).
// Requests made while one runs wait for it; worker reloads waiting
// together coalesce into one. The returned channel receives the result
// of the reload that served this request.
func (s *Supervisor) Reload(req ReloadRequest) <-chan ReloadResult {
	c := make(chan ReloadResult, 1)
	if req.At.IsZero() {
		req.At = s.env.now()
	}
	if !s.post(func() { s.enqueue(req, c) }) {
		waiter{c: c, outcome: req.Outcome}.answer(ReloadResult{Error: "master is no longer running workers", Master: req.Master})
	}
	return c
}

// Status returns a snapshot of the supervisor.
func (s *Supervisor) Status() Status {
	c := make(chan Status, 1)
	if s.post(func() { c <- s.status(true) }) {
		return <-c
	}
	return *s.final.Load()
}

// Alive reports whether the supervision loop answers within ctx: the
// watchdog pings systemd only while it does.
func (s *Supervisor) Alive(ctx context.Context) error {
	c := make(chan struct{})
	select {
	case s.events <- func() { close(c) }:
	case <-s.done:
		return nil
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

// Kill makes a running or coming shutdown kill workers at once instead
// of waiting for them to drain (a second SIGINT).
func (s *Supervisor) Kill() {
	s.post(func() {
		s.killed = true
		if s.phase == MasterStopping {
			s.killAll()
		}
	})
}

func (s *Supervisor) killAll() {
	for _, g := range s.gens {
		for _, sl := range g.slots {
			if sl.cur != nil {
				sl.cur.kill()
			}
			if sl.next != nil {
				sl.next.kill()
			}
			for _, w := range sl.exiting {
				w.kill()
			}
		}
	}
}

// masterMoves are the master's allowed transitions.
var masterMoves = transitions[MasterPhase]{
	MasterStarting:   {MasterServing, MasterUpgrading, MasterStopping},
	MasterServing:    {MasterUpgrading, MasterStopping},
	MasterUpgrading:  {MasterServing, MasterStarting, MasterHandedOver, MasterStopping},
	MasterHandedOver: {MasterStopping},
}

// setPhase moves the master to phase to and logs why.
func (s *Supervisor) setPhase(to MasterPhase, why string) {
	from := s.phase
	if from == to {
		return
	}
	if !masterMoves.allows(from, to) {
		s.refuse("master", from, to, why)
		return
	}
	s.phase = to
	s.log.Debug("master phase", "phase", string(to), "was", string(from), "why", why)
	s.dirty = true
}

// runningPhase is the phase of a master that neither stops nor upgrades.
func (s *Supervisor) runningPhase() MasterPhase {
	if s.served {
		return MasterServing
	}
	return MasterStarting
}

// beginStop stops everything: the reload under way ends, waiting
// requests fail, and every worker gets its stop signal at once.
func (s *Supervisor) beginStop() {
	s.log.Info("stopping workers", "drain_timeout", s.cfg.DrainTimeout.String())
	s.setPhase(MasterStopping, "asked to stop")
	// Before any worker is stopped: systemd, and load balancers through
	// the admin endpoint, learn first.
	s.emit(Event{Kind: EventStopping})
	s.failQueue("master stopped before the reload ran")
	if r := s.rolling(); r != nil {
		switch {
		case r.master:
			r.cancel() // upgradeDone ends it
		case s.serving == r.g:
			// Committed: the new generation serves, and the stop only
			// cuts its predecessor's retirement short. The reload ends
			// once that is gone, as any does: its outcome may close
			// listeners only the old workers hold.
		default:
			// It ends, failed, once its generation is gone, for the same
			// reason.
			r.err = fmt.Errorf("master stopping")
			r.transition(RollRollingBack, "master stopping")
		}
	}
	s.failQueue("master stopped before the reload ran")
	if o := s.scaling(); o != nil {
		// Its waiter hears now: the new workers will not get ready, nor
		// the removed ones be waited for.
		o.reply <- ScaleResult{Workers: s.cfg.Workers, Error: "master stopping"}
		s.op = nil
	}
	if s.recycling() != nil {
		s.op = nil
	}
	s.retireQueue, s.retireDraining = nil, nil
	for _, g := range s.gens {
		g.transition(GenRetiring, "master stopping")
		for _, sl := range g.slots {
			s.retireNow(sl)
		}
	}
	if s.killed {
		s.killAll()
	}
	s.sweep()
}

// newGeneration resolves the command and prepares a generation.
func (s *Supervisor) newGeneration(num int, phase GenPhase) (*generation, error) {
	c := s.cfg
	return s.newGenerationWith(num, phase, &c)
}

// newGenerationWith prepares a generation that runs with cfg.
func (s *Supervisor) newGenerationWith(num int, phase GenPhase, cfg *Config) (*generation, error) {
	path, err := ResolveCommand(cfg.Command[0])
	if err != nil {
		return nil, err
	}
	g := &generation{num: num, cfg: cfg, env: userEnv(cleanEnv(cfg.Environ), cfg.User), path: path, exe: openExe(path), argv: cfg.Command, phase: phase, log: s.log.With("generation", num), s: s}
	g.slots = make([]*slot, cfg.Workers)
	for i := range g.slots {
		g.slots[i] = newSlot(g, i, s.freeBank(i))
	}
	g.active = len(g.slots)
	return g, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// freeBank is the bank a new worker in slot i uses: the one the serving
// generation's worker in that slot does not (before any generation:
// Config.FirstBanks).
func (s *Supervisor) freeBank(i int) int {
	if s.serving != nil && i < len(s.serving.slots) {
		return 1 - s.serving.slots[i].bank
	}
	if i < len(s.cfg.FirstBanks) {
		return s.cfg.FirstBanks[i]
	}
	return 0
}

// nowServing records that g serves.
func (s *Supervisor) nowServing(g *generation) {
	s.serving = g
	if s.served {
		return
	}
	s.served = true
	if s.phase == MasterStarting {
		s.setPhase(MasterServing, fmt.Sprintf("generation %d serves", g.num))
	}
	s.emit(Event{Kind: EventServing, Generation: g.num})
}

// startWorker starts a worker in sl. A worker that cannot be started
// counts as a failure.
func (s *Supervisor) startWorker(sl *slot) {
	sl.cancelRestart()
	if sl.retired() {
		return
	}
	w, err := s.spawn(sl, sl.bank)
	if err != nil {
		s.lim.Log(s.log, hclog.Error, "cannot start worker", "generation", sl.gen.num, "slot", sl.index, "error", err)
		s.judged(sl, verdict{failed: true, reason: "cannot start: " + err.Error()})
		return
	}
	sl.setCur(w)
	s.dirty = true
}

// spawn starts one worker process for sl, on the slot's steered sockets
// of bank.
func (s *Supervisor) spawn(sl *slot, bank int) (*worker, error) {
	g := sl.gen
	s.seq++
	path, ns, err := s.notifySocket()
	if err != nil {
		return nil, err
	}
	files := []int{s.devnull, 1, 2}
	var streams [2]*os.File // the read ends of the output pipes
	if s.cfg.Output != OutputInherit {
		for i := range streams {
			r, w, err := pipe()
			if err != nil {
				closeFiles(streams[:])
				closeNotify(ns)
				return nil, err
			}
			streams[i], files[1+i] = r, w
			defer unix.Close(w) // the child has its own copy
		}
	}
	names := make([]string, len(g.cfg.Listeners))
	for j, l := range g.cfg.Listeners {
		files = append(files, l.fd(bank, sl.index))
		names[j] = l.Name
	}
	exe := g.path
	if g.exe >= 0 {
		// The file this generation resolved, whatever is at its path
		// now (a release moved over it, then rolled back).
		exe = fmt.Sprintf("/proc/self/fd/%d", len(files))
		files = append(files, g.exe)
	}
	p, err := s.starter.start(procSpec{
		path:      exe,
		argv:      g.argv,
		env:       workerEnv(g, sl.index, path, names),
		files:     files,
		listenPID: len(names) > 0,
		user:      s.cfg.User,
		name:      fmt.Sprintf("w%d-g%d-s%d", s.seq, g.num, sl.index),
	})
	if err != nil {
		closeFiles(streams[:])
		closeNotify(ns)
		return nil, err
	}
	w := s.newWorker(sl, bank, p, ns)
	w.streams = streams
	if streams[0] != nil {
		w.tail = &tail{}
		w.outDone, w.stderrDone = s.forwardOutput(streams, sl.index, g.num, p.pid(), w.tail)
	}
	s.lim.Log(w.log, hclog.Info, "worker starting")
	w.begin()
	return w, nil
}

// notifySocket opens a new worker's notify socket, under an unguessable
// name: the directory cannot be listed by workers, and a worker may not
// write to another's socket by guessing its name. With --user only the
// worker's user may write to it.
func (s *Supervisor) notifySocket() (string, *systemd.NotifySocket, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	path := filepath.Join(s.cfg.RuntimeDir, fmt.Sprintf("n%d-%x.sock", s.seq, rnd))
	ns, err := s.env.notifySocket(path)
	if err != nil {
		return "", nil, err
	}
	if u := s.cfg.User; u != nil && ns != nil {
		err := os.Chown(path, int(u.UID), int(u.GID))
		if err == nil {
			err = os.Chmod(path, 0o600)
		}
		if err != nil {
			closeNotify(ns)
			return "", nil, fmt.Errorf("notify socket: %w", err)
		}
	}
	return path, ns, nil
}

// workerEnv is the environment of a worker of g in slot, with its notify
// socket and the names of its listeners.
func workerEnv(g *generation, slot int, notify string, names []string) []string {
	env := append(g.env[:len(g.env):len(g.env)],
		"NOTIFY_SOCKET="+notify,
		fmt.Sprintf("HANDOFF_WORKER=%d", slot),
		fmt.Sprintf("HANDOFF_GENERATION=%d", g.num),
	)
	if d := g.cfg.Watchdog; d > 0 {
		// WATCHDOG_PID is left out: sd_watchdog_enabled(3) takes an unset
		// one as "this process", and the pid is the shim's to know.
		env = append(env, fmt.Sprintf("WATCHDOG_USEC=%d", d.Microseconds()))
	}
	if len(names) > 0 {
		env = append(env,
			fmt.Sprintf("LISTEN_FDS=%d", len(names)),
			"LISTEN_FDNAMES="+strings.Join(names, ":"),
		)
	}
	return env
}

// forwardOutput copies a worker's stdout and stderr to the master's
// output, keeping the last lines of stderr in t; done closes at the end
// of both streams, stderrDone at the end of stderr.
func (s *Supervisor) forwardOutput(streams [2]*os.File, slot, gen, pid int, t *tail) (done, stderrDone chan struct{}) {
	done, stderrDone = make(chan struct{}), make(chan struct{})
	o := &output{mode: s.cfg.Output, w: s.cfg.OutputTo, mu: s.cfg.OutputLock}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		o.forward(streams[0], "stdout", slot, gen, pid, nil)
	}()
	go func() {
		defer wg.Done()
		defer close(stderrDone)
		o.forward(streams[1], "stderr", slot, gen, pid, t)
	}()
	go func() {
		wg.Wait()
		close(done)
	}()
	return done, stderrDone
}

// newWorker makes the worker of a process just started in sl.
func (s *Supervisor) newWorker(sl *slot, bank int, p process, ns *systemd.NotifySocket) *worker {
	g := sl.gen
	w := &worker{
		s:       s,
		slot:    sl.index,
		bank:    bank,
		gen:     g.num,
		proc:    p,
		notify:  ns,
		log:     s.log.With("generation", g.num, "slot", sl.index, "pid", p.pid()),
		started: s.env.now(),
		opts: workerOpts{
			readyDelay:   g.cfg.ReadyDelay,
			readyTimeout: g.cfg.ReadyTimeout,
			drainTimeout: g.cfg.DrainTimeout,
			stopSignal:   g.cfg.StopSignal,
			watchdog:     g.cfg.Watchdog,
			health:       g.cfg.Health,
		},
		ev: workerEvents{
			ready:  func(w *worker) { s.workerReady(sl, w) },
			exited: func(w *worker) { s.workerExited(sl, w) },
			gone:   func(w *worker) { s.workerGone(sl, w) },
		},
		drains:  drainTargets(g.cfg.Listeners, sl.index, bank),
		garbage: lograte.Every(time.Second),
		state:   Starting,
	}
	if p := g.cfg.Probe; p != nil {
		l := g.cfg.Listeners[p.Listener]
		w.prober = &prober{group: l.Group, bank: bank, slot: sl.index, path: p.HTTP, host: l.Addr}
	}
	if h := g.cfg.Health; h != nil {
		l := g.cfg.Listeners[h.Listener]
		w.health = &prober{group: l.Group, bank: bank, slot: sl.index, path: h.HTTP, host: l.Addr}
	}
	return w
}

// closeNotify closes the notify socket of a worker that did not start.
func closeNotify(ns *systemd.NotifySocket) {
	if ns == nil {
		return
	}
	ns.Drain()
	for range ns.Datagrams() {
	}
}

// workerReady: a worker of sl became ready.
func (s *Supervisor) workerReady(sl *slot, w *worker) {
	s.dirty = true
	if sl.next == w {
		s.recycleReady(sl, w)
		return
	}
	if sl.cur != w {
		return
	}
	sl.markReady("worker ready")
	s.steerDirty = true
	g := sl.gen
	if r := s.rolling(); r != nil && r.g == g {
		if w.readyAt.After(r.lastReady) {
			r.lastReady = w.readyAt
		}
	}
	if s.scaling() != nil {
		s.advanceScale()
	}
	if g.phase == GenStarting && g.allReady() {
		g.transition(GenServing, "every worker is ready")
		s.nowServing(g)
	}
	s.advance()
}

// workerExited: a worker's main process ended. A worker the master
// stopped on purpose is not judged; any other is, by the restart policy,
// or fails the reload its generation is on probation for.
func (s *Supervisor) workerExited(sl *slot, w *worker) {
	s.dirty = true
	if sl.next == w {
		s.recycleExited(sl, w)
		return
	}
	if sl.cur != w {
		return
	}
	s.steerDirty = true // away from its sockets, until a replacement is ready
	if next := sl.next; next != nil {
		// It was being replaced (memory): the replacement takes over.
		sl.drop()
		sl.next, sl.cur, sl.bank = nil, next, next.bank
		if sl.phase == slotRecycling {
			sl.to(sl.curPhase(), "its worker exited; the replacement takes over")
		}
		return
	}
	sl.detach("its worker exited")
	v := judge(w.readyAt, w.exitedAt, w.exit, w.failure, s.cfg.MinUptime)
	if w.hung != "" {
		v = verdict{reason: w.hung, as: w.hungKind}
	}
	v.pid, v.stderr, v.inherited = w.proc.pid(), w.tail.last(), w.tail == nil
	if sl.gen.phase == GenProbation && s.rolling() != nil && s.rolling().g == sl.gen {
		s.failRollover(fmt.Errorf("slot %d: %s", sl.index, v.reason), v)
		return
	}
	s.judged(sl, v)
}

// judged restarts sl after its worker ended as v says: at once, or after
// a backoff, unless the slot is no longer to run workers.
func (s *Supervisor) judged(sl *slot, v verdict) {
	g := sl.gen
	switch {
	case sl.retired() || s.phase == MasterStopping || s.phase == MasterHandedOver:
		return
	case g.phase == GenProbation:
		// Before the replaces() case, which excludes probation: a
		// worker of a reload that could not even start fails it (the
		// simulator found such reloads waiting forever).
		s.failRollover(fmt.Errorf("slot %d: %s", sl.index, v.reason), v)
		return
	case !g.replaces():
		return
	}
	sl.restarts++
	sl.lastExit, sl.lastStderr, sl.lastKind = v.reason, v.stderr, v.kind()
	s.restarts[v.kind()]++
	if !v.failed {
		sl.failures = 0
		s.lim.Log(s.log, hclog.Info, "replacing worker", "generation", g.num, "slot", sl.index, "previous", v.reason)
		s.startWorker(sl)
		return
	}
	sl.failures++
	if n := s.cfg.StartAttempts; n > 0 && !s.served && g.phase == GenStarting && s.giveUp == nil {
		all := true
		for _, x := range g.slots {
			all = all && x.failures >= n
		}
		if all {
			s.giveUp = fmt.Errorf("no worker of the first generation became ready: every slot failed %d times in a row, slot %d last: %s", n, sl.index, v.reason)
			s.log.Error("giving up", "error", s.giveUp)
			s.beginStop()
			return
		}
	}
	d := backoffFor(sl.failures)
	s.lim.Log(s.log, hclog.Warn, "worker failed, restarting after backoff", "generation", g.num, "slot", sl.index, "reason", v.reason, "backoff", d.String())
	sl.cancelRestart()
	sl.to(slotBackoff, v.reason)
	sl.wake = s.env.now().Add(d)
	sl.timer.set(s.env, d, func() {
		if sl.cur == nil && !sl.retired() && g.replaces() {
			s.startWorker(sl)
		}
	})
}

// workerGone: no process of w's tree is left.
func (s *Supervisor) workerGone(sl *slot, w *worker) {
	s.dirty = true
	sl.forget(w)
	s.pumpRetire()
	s.advance()
	s.advanceScale()
	s.advanceRecycle()
	s.sweep()
}

// sweep forgets retiring generations with no process left.
func (s *Supervisor) sweep() {
	s.gens = slices.DeleteFunc(s.gens, func(g *generation) bool {
		if g.phase != GenRetiring || g.live() {
			return false
		}
		g.transition(GenGone, "no process left")
		return true
	})
}

// queueRetire marks sl retired and queues its worker for a graceful stop.
func (s *Supervisor) queueRetire(sl *slot) {
	if sl.retired() {
		return
	}
	sl.retire("retiring")
	s.steerDirty = true
	if sl.cur != nil {
		s.retireQueue = append(s.retireQueue, sl)
	}
}

// pumpRetire stops the workers of queued slots, RetireParallel at a time,
// each once its steered sockets have been steered away from and have
// empty queues.
func (s *Supervisor) pumpRetire() {
	if s.steerDirty {
		s.resteer()
	}
	s.retireDraining = slices.DeleteFunc(s.retireDraining, func(sl *slot) bool { return !sl.live() })
	for len(s.retireDraining) < s.cfg.RetireParallel && len(s.retireQueue) > 0 {
		sl := s.retireQueue[0]
		s.retireQueue = s.retireQueue[1:]
		if w := sl.detach("retiring"); w != nil {
			w.retire(s.unrouted(w))
		}
		if sl.live() {
			s.retireDraining = append(s.retireDraining, sl)
		}
	}
}

// retiring reports whether workers are queued for retirement or being
// retired.
func (s *Supervisor) retiring() bool {
	s.retireDraining = slices.DeleteFunc(s.retireDraining, func(sl *slot) bool { return !sl.live() })
	return len(s.retireQueue) > 0 || len(s.retireDraining) > 0
}

// retireNow stops sl's worker at once, outside the retirement queue.
func (s *Supervisor) retireNow(sl *slot) {
	sl.retire("stopping now")
	s.retireQueue = slices.DeleteFunc(s.retireQueue, func(x *slot) bool { return x == sl })
	if w := sl.detach("stopping now"); w != nil {
		w.stop()
	}
	if w := sl.next; w != nil {
		sl.next = nil
		sl.exiting = append(sl.exiting, w)
	}
	for _, w := range sl.exiting {
		w.stop()
	}
	s.steerDirty = true
}

// emit calls Config.OnEvent with the current status.
func (s *Supervisor) emit(e Event) {
	if s.cfg.OnEvent == nil {
		return
	}
	e.Status = s.status(false)
	s.cfg.OnEvent(e)
}

// status builds a snapshot; Run's goroutine only. live samples the
// workers' memory and CPU and their steered sockets' accept queues (a few
// syscalls each: for Status, not for every event).
func (s *Supervisor) status(live bool) Status {
	st := Status{
		PID:           os.Getpid(),
		Started:       s.started,
		Phase:         s.phase,
		Serving:       s.served,
		ReloadPending: len(s.queue) > 0,
		Counters:      Counters{Restarts: maps.Clone(s.restarts), Reloads: maps.Clone(s.reloads)},
		Generations:   []GenerationStatus{},
		Workers:       []WorkerStatus{},
	}
	if s.serving != nil {
		st.Generation = s.serving.num
	}
	if r := s.rolling(); r != nil {
		st.Reloading = r.num
		st.Rollover = &RolloverStatus{Generation: r.num, Master: r.master, Phase: r.phase}
		if !r.master {
			st.Rollover.Strategy = r.strategy
			if r.g != nil {
				st.Rollover.Workers = len(r.g.slots)
			}
		}
		if r.phase == RollProbation && r.probation.stop != nil {
			st.Rollover.ProbationEnds = r.lastReady.Add(s.cfg.MinUptime)
		}
	}
	if s.lastReload != nil {
		r := *s.lastReload
		st.LastReload = &r
	}
	for _, g := range s.gens {
		st.Generations = append(st.Generations, GenerationStatus{Generation: g.num, Phase: g.phase, Command: g.path})
		for _, sl := range g.slots {
			st.Workers = sl.snapshot(st.Workers, live)
		}
	}
	slices.SortStableFunc(st.Workers, func(a, b WorkerStatus) int {
		if a.Generation != b.Generation {
			return a.Generation - b.Generation
		}
		return a.Slot - b.Slot
	})
	for _, l := range s.cfg.Listeners {
		st.Listeners = append(st.Listeners, l.status(live))
	}
	return st
}
