package workers

import (
	"container/heap"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
)

// The simulator runs the real supervisor (every line of supervisor.go,
// rollover.go, scale.go, slot.go, worker.go, steering.go) on one
// goroutine, under a seeded clock, with simulated processes and steered
// groups, and injects faults in random orders: crashes before and after
// READY, hangs on the stop signal, leftover helpers, kill -9 and kill
// storms from outside, broken releases, configuration reloads that change
// listeners and the worker count, master upgrades that succeed, fail or
// hand over, scaling, memory recycling, clients that stop waiting, and
// SIGTERM in the middle of any of it. After every step it checks the
// invariants of doc.go. A seed fixes everything, so a failure replays
// exactly:
//
//	go test ./workers -run TestSimulate -sim.seed N [-sim.steps K] -v
//
// prints the schedule's trace. -sim.seeds sets how many schedules run,
// HANDOFF_SIM_SOAK=N runs N of them (a soak of millions).

var (
	simSeed  = flag.Uint64("sim.seed", 0, "run only this simulator seed, with its trace")
	simSeeds = flag.Int("sim.seeds", 10000, "how many seeded schedules TestSimulate runs")
	simSteps = flag.Int("sim.steps", 300, "steps in each schedule (a master may end in the last 100)")
)

// simEpoch is the simulated clock's start.
var simEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simTimer is one pending event of the simulated clock.
type simTimer struct {
	at      time.Time
	seq     int
	fn      func()
	stopped bool
}

type timerHeap []*simTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(*simTimer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// simBehaviour is how a simulated process acts, drawn from the seed.
type simBehaviour struct {
	readyAfter  time.Duration // sends READY=1 then (never: -1)
	exitAt      time.Duration // > 0: exits on its own then (after start)
	exitCode    int
	crash       bool // exits by SIGSEGV rather than a status
	ignoreStop  bool // the stop signal does nothing
	stopTakes   time.Duration
	leftover    bool  // leaves a helper that only SIGKILL removes
	rss         int64 // resident memory
	killLatency time.Duration
}

// simProc is a simulated worker process.
type simProc struct {
	sim      *sim
	id       int
	gen      int
	slot     int
	release_ string
	groups   []*simGroup // the steered groups whose sockets it holds
	b        simBehaviour
	w        *worker
	alive    bool // the main process
	leftover bool // a helper of its tree
	stopped  bool // the supervisor sent it a stop signal or SIGKILL
	frozen   bool // SIGSTOP from outside: it neither accepts nor handles signals but SIGKILL
	fds      []int
	released bool
	exitSent bool
}

func (p *simProc) pid() int                { return p.id }
func (p *simProc) exited() <-chan exitInfo { return nil }
func (p *simProc) pids() []int             { return []int{p.id} }
func (p *simProc) owns(int) bool           { return true }
func (p *simProc) treeEmpty() bool         { return !p.alive && !p.leftover }

func (p *simProc) release() {
	if p.released {
		p.sim.violate("process %d released twice", p.id)
	}
	p.released = true
}

func (p *simProc) signal(sig syscall.Signal) error {
	p.sim.trace("signal p%d g%d s%d %s", p.id, p.gen, p.slot, unix.SignalName(sig))
	if p.released {
		p.sim.violate("signal %s to process %d after its release", unix.SignalName(sig), p.id)
	}
	p.stopped = true
	if sig == unix.SIGKILL {
		p.leftover = false
		if p.alive {
			p.exitAfter(p.b.killLatency, killedBy(unix.SIGKILL))
		}
		return nil
	}
	if p.alive && !p.b.ignoreStop && !p.frozen {
		p.exitAfter(p.b.stopTakes, exitedWith(0))
	}
	return nil
}

// exitAfter ends the main process after d, unless it ended already.
func (p *simProc) exitAfter(d time.Duration, e exitInfo) {
	p.sim.after(d, func() { p.die(e) })
}

func (p *simProc) die(e exitInfo) {
	if !p.alive || p.exitSent {
		return
	}
	if p.frozen && !(e.status.Signaled() && e.status.Signal() == unix.SIGKILL) {
		return // a stopped process does nothing of its own
	}
	p.alive = false
	p.exitSent = true
	p.leftover = p.b.leftover && !(e.status.Signaled() && e.status.Signal() == unix.SIGKILL)
	p.sim.trace("exit p%d g%d s%d %s", p.id, p.gen, p.slot, e)
	if p.w != nil {
		p.w.onExit(e)
	}
}

// simGroup is a simulated steered group.
type simGroup struct {
	sim     *sim
	name    string
	slots   int
	targets []steer.Target
	closed  bool
	fdBase  int
}

func (g *simGroup) Fd(bank, slot int) int { return g.fdBase + bank*100000 + slot }
func (g *simGroup) Steer(active []steer.Target) error {
	if g.closed {
		return errors.New("group closed")
	}
	for _, t := range active {
		if t.Slot >= g.slots {
			return fmt.Errorf("slot %d of %d", t.Slot, g.slots)
		}
	}
	g.targets = slices.Clone(active)
	return nil
}
func (g *simGroup) Grow(n int) error {
	if g.closed {
		return errors.New("group closed")
	}
	g.slots = max(g.slots, n)
	return nil
}

// QueueLen: connections wait on the socket of a process stopped from
// outside (SIGSTOP); every other one reads its queue.
func (g *simGroup) QueueLen(bank, slot int) (int, error) {
	fd := g.Fd(bank, slot)
	for _, p := range g.sim.procs {
		if p.alive && p.frozen && slices.Contains(p.fds, fd) {
			return 2, nil
		}
	}
	return 0, nil
}
func (g *simGroup) Held(bank, slot int) (int, error) { return 0, errors.New("not counted") }
func (g *simGroup) Foreign() (int, error)            { return 0, nil }
func (g *simGroup) WaitDrained(ctx context.Context, bank, slot int, since time.Time, quiet time.Duration) error {
	if g.closed {
		return errors.New("group closed")
	}
	return nil
}
func (g *simGroup) Spec() upgrade.Spec         { return upgrade.Spec{Name: g.name, Network: "tcp"} }
func (g *simGroup) Mode() steer.Mode           { return steer.ModeSteer }
func (g *simGroup) Mechanism() steer.Mechanism { return steer.EBPF }
func (g *simGroup) Selection() string          { return "round-robin" }

// simRequest is one reload request of the schedule.
type simRequest struct {
	id       int
	master   bool
	answers  int
	res      ReloadResult
	cancel   bool // its client stopped waiting
	opened   []*simGroup
	next     []*simGroup // the listeners it commits on success
	c        chan ReloadResult
	isConfig bool
}

// sim is one schedule.
type sim struct {
	seed     uint64
	rng      *rand.Rand
	now      time.Time
	timers   timerHeap
	seq      int
	s        *Supervisor
	procs    []*simProc
	nextPID  int
	groups   []*simGroup // the master's listeners now
	fds      map[int]*simGroup
	reqs     []*simRequest
	turn     *simRequest // the configuration reload under way (one at a time, as the runner does)
	scales   []chan ScaleResult
	calm     bool // no more faults: new processes behave
	stopping bool
	step     int
	steps    int // the schedule's length
	verbose  bool
	tr       []string
	fails    []string
	// buggyCancel makes a client that stops waiting close the listeners
	// its reload opened (what handoff did before the reload's outcome
	// owned them); a test shows the invariants catch it.
	buggyCancel bool
}

func (m *sim) trace(format string, args ...any) {
	if m.verbose {
		m.tr = append(m.tr, fmt.Sprintf("%9s #%d ", m.now.Sub(simEpoch).Round(time.Microsecond), m.step)+fmt.Sprintf(format, args...))
	}
}

func (m *sim) violate(format string, args ...any) {
	m.fails = append(m.fails, fmt.Sprintf("step %d at %s: ", m.step, m.now.Sub(simEpoch))+fmt.Sprintf(format, args...))
}

func (m *sim) after(d time.Duration, fn func()) *simTimer {
	m.seq++
	t := &simTimer{at: m.now.Add(max(d, 0)), seq: m.seq, fn: fn}
	heap.Push(&m.timers, t)
	return t
}

// The simulator's env.

type simEnv struct{ m *sim }

func (e simEnv) now() time.Time { return e.m.now }
func (e simEnv) after(d time.Duration, fn func()) func() {
	t := e.m.after(d, fn)
	return func() { t.stopped = true }
}
func (e simEnv) async(work, done func()) {
	e.m.after(time.Duration(1+e.m.rng.IntN(50))*time.Millisecond, func() {
		work()
		done()
	})
}
func (simEnv) notifySocket(string) (*systemd.NotifySocket, error) { return nil, nil }
func (e simEnv) watch(w *worker) {
	p := w.proc.(*simProc)
	p.w = w
	if p.b.readyAfter >= 0 {
		e.m.after(p.b.readyAfter, func() {
			if p.alive {
				p.sim.trace("READY p%d g%d s%d", p.id, p.gen, p.slot)
				w.onDatagram(systemd.Datagram{Msg: systemd.Message{Ready: true}})
			}
		})
	}
	if p.b.exitAt > 0 {
		e := exitedWith(p.b.exitCode)
		if p.b.crash {
			e = killedBy(unix.SIGSEGV)
		}
		p.exitAfter(p.b.exitAt, e)
	}
}

// The simulator's starter.

type simStarter struct{ m *sim }

func (simStarter) close() {}

func (st simStarter) start(spec procSpec) (process, error) {
	m := st.m
	gen, _ := strconv.Atoi(envOf(spec.env, "HANDOFF_GENERATION"))
	slot, _ := strconv.Atoi(envOf(spec.env, "HANDOFF_WORKER"))
	release := ""
	if len(spec.argv) > 1 {
		release = spec.argv[1]
	}
	if !m.calm && m.rng.IntN(200) == 0 {
		return nil, errors.New("fork: resource temporarily unavailable")
	}
	m.nextPID++
	p := &simProc{sim: m, id: m.nextPID, gen: gen, slot: slot, release_: release, alive: true, b: m.behaviour(release)}
	for _, fd := range spec.files[3:] {
		if g := m.fds[fd]; g != nil {
			p.groups = append(p.groups, g)
			p.fds = append(p.fds, fd)
		}
	}
	m.procs = append(m.procs, p)
	m.trace("start p%d g%d s%d %s", p.id, gen, slot, release)
	return p, nil
}

// behaviour draws a process's behaviour: mostly a good worker; the
// release named in its argv may be broken on purpose.
func (m *sim) behaviour(release string) simBehaviour {
	r := m.rng
	b := simBehaviour{
		readyAfter:  time.Duration(1+r.IntN(300)) * time.Millisecond,
		stopTakes:   time.Duration(r.IntN(400)) * time.Millisecond,
		killLatency: time.Duration(r.IntN(3)) * time.Millisecond,
		rss:         int64(10+r.IntN(50)) << 20,
	}
	if m.calm {
		return b
	}
	switch release {
	case "crash":
		b.readyAfter = -1
		b.exitAt = time.Duration(1+r.IntN(200)) * time.Millisecond
		b.exitCode = 1
	case "never":
		b.readyAfter = -1
	case "flaky": // ready, then dies within the minimum uptime
		b.exitAt = b.readyAfter + time.Duration(1+r.IntN(500))*time.Millisecond
		b.crash = r.IntN(2) == 0
		b.exitCode = 3
	}
	// Faults of any release, now and then.
	switch r.IntN(40) {
	case 0:
		b.ignoreStop = true
	case 1:
		b.leftover = true
	case 2:
		b.exitAt = b.readyAfter + time.Duration(r.IntN(5000))*time.Millisecond
		b.crash = true
	case 3:
		b.readyAfter = -1
		b.exitAt = time.Duration(1+r.IntN(100)) * time.Millisecond
		b.exitCode = 2
	case 4, 5, 6:
		b.rss = 900 << 20 // above the memory limit
	}
	return b
}

// newSim builds a schedule's supervisor on the simulated env.
func newSim(t testing.TB, seed uint64, dir string) *sim {
	m := &sim{seed: seed, rng: rand.New(rand.NewPCG(seed, 0x68616e646f6666)), now: simEpoch, fds: map[int]*simGroup{}}
	g := m.newGroup("http")
	cfg := Config{
		Command:      []string{"/bin/true", "good"},
		Workers:      1 + m.rng.IntN(4),
		Listeners:    []Listener{g.listener()},
		RuntimeDir:   dir,
		MinUptime:    time.Second,
		ReadyTimeout: 5 * time.Second,
		DrainTimeout: time.Duration(1+m.rng.IntN(5)) * time.Second,
		Environ:      []string{"PATH=/usr/bin:/bin"},
	}
	if m.rng.IntN(3) == 0 {
		cfg.Strategy = Rolling
	}
	if m.rng.IntN(3) == 0 {
		cfg.MaxMemory = 500 << 20
	}
	if m.rng.IntN(4) == 0 {
		cfg.RetireParallel = 1 + m.rng.IntN(3)
	}
	if m.rng.IntN(3) == 0 {
		cfg.StartAttempts = 1 + m.rng.IntN(5)
	}
	cfg.UpgradeMaster = func(ctx context.Context, h Handover) error {
		switch m.rng.IntN(3) {
		case 0:
			return errors.New("new master exited with status 1")
		case 1:
			return nil // handed over
		}
		return errors.New("new master not ready in time")
	}
	g.Grow(cfg.Workers) // as the runner opens its listeners
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.env = simEnv{m}
	s.starter = simStarter{m}
	s.usage = func(p process) (int64, float64) {
		if sp, ok := p.(*simProc); ok && sp.alive {
			return sp.b.rss, 0
		}
		return 0, 0
	}
	s.onRefused = func(what string) { m.violate("refused transition %s", what) }
	m.s = s
	return m
}

func (m *sim) newGroup(name string) *simGroup {
	// One slot: the supervisor grows it to the count a generation runs
	// (the runner sizes a new listener by the file's count, which a
	// reload that keeps a scaled count exceeds).
	g := &simGroup{sim: m, name: name, slots: 1, fdBase: 1000 + 1000000*len(m.fds)}
	for b := 0; b < 2; b++ {
		for i := 0; i < 100; i++ {
			m.fds[g.Fd(b, i)] = g
		}
	}
	m.groups = append(m.groups, g)
	return g
}

func (g *simGroup) listener() Listener {
	return Listener{Name: g.name, Network: "tcp", Addr: "127.0.0.1:1", Fd: -1, sim: g}
}

func (m *sim) close() {
	unix.Close(m.s.devnull)
}

// run plays the schedule: steps of faults and time, a calm period in
// which the service must come back to full strength, then SIGTERM after
// which nothing may be left.
func (m *sim) run(steps int) {
	s := m.s
	m.steps = steps
	if err := s.begin(); err != nil {
		m.violate("begin: %v", err)
		return
	}
	m.check()
	for m.step = 1; m.step <= steps && len(m.fails) == 0; m.step++ {
		if s.finished() {
			break
		}
		if m.timers.Len() == 0 || m.rng.IntN(3) == 0 {
			m.inject()
		} else {
			m.fire()
		}
		s.settle()
		m.check()
	}
	if len(m.fails) > 0 {
		return
	}
	if !m.stopping && !s.finished() {
		m.calmDown()
	}
	if len(m.fails) > 0 {
		return
	}
	if !m.stopping && !s.finished() {
		m.trace("SIGTERM")
		m.stopping = true
		s.beginStop()
		s.settle()
		m.check()
	}
	m.runUntil(m.now.Add(10*time.Minute), s.finished)
	m.final()
}

// fire advances the clock to the next timer and runs it.
func (m *sim) fire() {
	for m.timers.Len() > 0 {
		t := heap.Pop(&m.timers).(*simTimer)
		if t.stopped {
			continue
		}
		m.now = t.at
		t.fn()
		return
	}
}

// runUntil fires timers until cond holds or the clock reaches end.
func (m *sim) runUntil(end time.Time, cond func() bool) {
	for !cond() && m.timers.Len() > 0 && len(m.fails) == 0 {
		if m.timers[0].at.After(end) {
			return
		}
		m.step++
		m.fire()
		m.s.settle()
		m.check()
	}
}

// inject makes one thing happen that the schedule draws.
func (m *sim) inject() {
	s, r := m.s, m.rng
	// The ends of a master (SIGTERM, a hand-over to a new one) come in
	// the last hundred steps of a schedule (the last third of a short
	// one), so that each runs at least steps-100 steps; faults go on
	// during the stop.
	late := m.step > max(m.steps-100, m.steps*2/3)
	switch n := r.IntN(100); {
	case m.stopping && n < 40:
		m.fire()
	case n < 18:
		m.reload(false, m.release())
	case n < 30:
		m.configReload(true, m.release())
	case n < 34:
		if late {
			m.reload(true, "")
		}
	case n < 42:
		delta := []int{-1, 1}[r.IntN(2)]
		target := 0
		if r.IntN(2) == 0 {
			target, delta = 1+r.IntN(6), 0
		}
		m.trace("scale n=%d delta=%d", target, delta)
		c := make(chan ScaleResult, 1)
		m.scales = append(m.scales, c)
		if s.phase == MasterStopping || s.phase == MasterHandedOver {
			c <- ScaleResult{Error: "master is no longer running workers"} // as Scale answers
			return
		}
		s.queue = append(s.queue, &op{scale: &scaleOp{n: target, delta: delta, reply: c}})
		s.nextOp()
	case n < 62:
		m.killRandom(1)
	case n < 65:
		m.killRandom(1 + r.IntN(8)) // a storm
	case n < 68:
		// SIGSTOP from outside, or SIGCONT of one stopped.
		for _, p := range m.procs {
			if p.alive && p.frozen && r.IntN(2) == 0 {
				m.trace("kill -CONT p%d g%d s%d", p.id, p.gen, p.slot)
				p.frozen = false
				return
			}
		}
		for _, p := range m.procs {
			if p.alive && !p.frozen && r.IntN(3) == 0 {
				m.trace("kill -STOP p%d g%d s%d", p.id, p.gen, p.slot)
				p.frozen = true
				return
			}
		}
	case n < 75:
		// A client stops waiting for a reload under way.
		for _, q := range m.reqs {
			if q.answers == 0 && !q.cancel {
				m.trace("client of request %d stops waiting", q.id)
				q.cancel = true
				if m.buggyCancel && q.isConfig {
					for _, g := range q.opened {
						g.closed = true
					}
				}
				break
			}
		}
	case n < 77:
		m.trace("second SIGINT (Kill)")
		s.killed = true
		if s.phase == MasterStopping {
			s.killAll()
		}
	case n < 79 && late && !m.stopping:
		m.trace("SIGTERM")
		m.stopping = true
		s.beginStop()
	default:
		m.fire()
	}
}

func (m *sim) release() string {
	switch m.rng.IntN(8) {
	case 0:
		return "crash"
	case 1:
		return "never"
	case 2:
		return "flaky"
	}
	return "good"
}

// reload asks for a plain reload, or a master upgrade; a release other
// than "good" comes as a configuration (with --config, every reload does).
func (m *sim) reload(master bool, release string) {
	if !master && release != "good" {
		m.configReload(false, release)
		return
	}
	q := &simRequest{id: len(m.reqs) + 1, master: master, c: make(chan ReloadResult, 1)}
	m.reqs = append(m.reqs, q)
	m.trace("reload %d master=%v", q.id, master)
	m.s.enqueue(ReloadRequest{Master: master, At: m.now, Outcome: m.outcome(q)}, q.c)
}

// configReload reads a "configuration" again: a release, maybe another
// worker count and listeners added or removed, opened now and owned by
// the outcome, one configuration reload at a time, as the runner does.
func (m *sim) configReload(listeners bool, release string) {
	if m.turn != nil {
		return
	}
	r := m.rng
	q := &simRequest{id: len(m.reqs) + 1, isConfig: true, c: make(chan ReloadResult, 1)}
	m.reqs = append(m.reqs, q)
	next := slices.Clone(m.groups)
	if listeners && len(next) > 1 && r.IntN(3) == 0 {
		next = slices.Delete(next, 1, 2)
	}
	if listeners && len(next) < 4 && r.IntN(2) == 0 {
		g := m.newGroup(fmt.Sprintf("l%d", len(m.fds)))
		m.groups = m.groups[:len(m.groups)-1] // not the master's until the outcome says so
		next = append(next, g)
		q.opened = append(q.opened, g)
	}
	q.next = next
	c := m.s.cfg
	c.Command = []string{"/bin/true", release}
	keep := true
	if listeners && r.IntN(2) == 0 {
		c.Workers, keep = 1+r.IntN(6), false
	}
	c.Listeners = nil
	for _, g := range next {
		c.Listeners = append(c.Listeners, g.listener())
	}
	m.turn = q
	m.trace("config reload %d listeners=%d workers=%d release=%s", q.id, len(next), c.Workers, release)
	m.s.enqueue(ReloadRequest{At: m.now, Config: &c, KeepWorkers: keep, Outcome: m.outcome(q)}, q.c)
}

// outcome is the request's Outcome: it checks that the answer is the
// only one and matches what the supervisor did, and commits or closes
// the listeners of a configuration, as the runner does.
func (m *sim) outcome(q *simRequest) func(ReloadResult) {
	return func(res ReloadResult) {
		q.answers++
		q.res = res
		m.trace("answer %d ok=%v gen=%d %s", q.id, res.OK, res.Generation, res.Error)
		if q.answers > 1 {
			m.violate("request %d answered %d times", q.id, q.answers)
		}
		s := m.s
		switch {
		case res.OK && !q.master && (s.serving == nil || s.serving.num != res.Generation):
			m.violate("request %d: ok for generation %d, but %v serves", q.id, res.Generation, s.serving)
		case res.OK && q.master && s.phase != MasterHandedOver:
			m.violate("request %d: master upgrade ok, but the master is %s", q.id, s.phase)
		case !res.OK && !q.master && s.serving != nil && res.Generation != 0 && s.serving.num == res.Generation:
			m.violate("request %d failed (%s), but its generation %d serves", q.id, res.Error, res.Generation)
		}
		if !q.isConfig {
			return
		}
		m.turn = nil
		if res.OK {
			for _, g := range m.groups {
				if !slices.Contains(q.next, g) {
					g.closed = true
				}
			}
			m.groups = q.next
		} else {
			for _, g := range q.opened {
				g.closed = true
			}
		}
	}
}

func (m *sim) killRandom(n int) {
	var live []*simProc
	for _, p := range m.procs {
		if p.alive {
			live = append(live, p)
		}
	}
	for i := 0; i < n && len(live) > 0; i++ {
		j := m.rng.IntN(len(live))
		p := live[j]
		live = slices.Delete(live, j, j+1)
		m.trace("kill -9 p%d g%d s%d from outside", p.id, p.gen, p.slot)
		p.leftover = false
		p.exitAfter(0, killedBy(unix.SIGKILL))
	}
}

// calmDown stops the faults and lets time pass: whatever happened, the
// service must come back to its full count, serving, with nothing
// pending.
func (m *sim) calmDown() {
	m.calm = true
	m.trace("calm")
	s := m.s
	for _, p := range m.procs {
		p.b.ignoreStop = false
	}
	full := func() bool {
		if s.rolling() != nil || s.scaling() != nil || s.recycling() != nil || len(s.queue) > 0 || s.phase != MasterServing {
			return false
		}
		g := s.serving
		if g == nil || g.phase != GenServing || len(s.gens) != 1 || len(g.slots) != s.cfg.Workers {
			return false
		}
		for _, sl := range g.slots {
			if sl.cur == nil || sl.cur.state != Ready || sl.retired() || sl.cur.away != "" || sl.cur.proc.(*simProc).frozen {
				return false // a stopped worker must have been replaced
			}
		}
		return true
	}
	m.runUntil(m.now.Add(5*time.Minute), full)
	if len(m.fails) == 0 && !full() && !s.finished() {
		m.violate("not back to full strength 5 minutes after the faults stopped: %s", m.describe())
	}
}

// describe summarizes the supervisor for a failure message.
func (m *sim) describe() string {
	s := m.s
	var b strings.Builder
	fmt.Fprintf(&b, "master %s, roll %v, queue %d, scaling %v, recycling %v, workers %d;", s.phase, s.rolling() != nil, len(s.queue), s.scaling() != nil, s.recycling() != nil, s.cfg.Workers)
	for _, g := range s.gens {
		fmt.Fprintf(&b, " gen %d %s [", g.num, g.phase)
		for _, sl := range g.slots {
			st := "-"
			if sl.cur != nil {
				st = string(sl.cur.state)
			}
			fmt.Fprintf(&b, " s%d:%s phase=%s exiting=%d", sl.index, st, sl.phase, len(sl.exiting))
		}
		b.WriteString(" ]")
	}
	return b.String()
}

// check verifies the invariants of doc.go after a step.
func (m *sim) check() {
	s := m.s
	// Every live worker's sockets are open in the master.
	for _, p := range m.procs {
		if !p.alive && !p.leftover {
			continue
		}
		for _, g := range p.groups {
			if g.closed {
				m.violate("process %d (gen %d slot %d) holds listener %s, which the master closed", p.id, p.gen, p.slot, g.name)
			}
		}
	}
	// No process the supervisor started is forgotten, and no slot has
	// two current workers.
	tracked := map[*simProc]bool{}
	for _, g := range s.gens {
		for _, sl := range g.slots {
			for _, w := range append(slices.Clone(sl.exiting), sl.cur, sl.next) {
				if w != nil {
					tracked[w.proc.(*simProc)] = true
				}
			}
		}
	}
	for _, g := range s.gens {
		ready, active := 0, 0
		for _, sl := range g.slots {
			if why := slotAgrees(sl); why != "" {
				m.violate("generation %d slot %d: phase %s but %s", g.num, sl.index, sl.phase, why)
			}
			if sl.ready() {
				ready++
			}
			if !sl.retired() {
				active++
			}
		}
		if ready != g.ready || active != g.active {
			m.violate("generation %d counts %d ready and %d active slots, its slots' phases say %d and %d", g.num, g.ready, g.active, ready, active)
		}
	}
	current := map[[2]int]int{}
	for _, p := range m.procs {
		if (p.alive || p.leftover) && !tracked[p] {
			m.violate("process %d (gen %d slot %d) is alive but the supervisor forgot it", p.id, p.gen, p.slot)
		}
		if p.alive && !p.stopped {
			current[[2]int{p.gen, p.slot}]++
		}
	}
	for k, n := range current {
		limit := 1
		if o := s.recycling(); o != nil && o.sl.gen.num == k[0] && o.sl.index == k[1] {
			limit = 2
		}
		if n > limit {
			m.violate("generation %d slot %d runs %d workers", k[0], k[1], n)
		}
	}
	m.checkSteering()
	m.procs = slices.DeleteFunc(m.procs, func(p *simProc) bool { return p.released && !p.alive && !p.leftover })
}

// slotAgrees says how sl's phase disagrees with its workers, or "".
func slotAgrees(sl *slot) string {
	curState := State("none")
	if sl.cur != nil {
		curState = sl.cur.state
	}
	switch sl.phase {
	case slotEmpty, slotBackoff:
		if sl.cur != nil || sl.next != nil {
			return "it has a worker"
		}
		if (sl.phase == slotBackoff) == sl.wake.IsZero() {
			return fmt.Sprintf("its restart is scheduled at %v", sl.wake)
		}
		return ""
	case slotStarting:
		if curState != Starting {
			return fmt.Sprintf("its worker is %s", curState)
		}
	case slotReady, slotPassed, slotRecycling:
		if curState != Ready {
			return fmt.Sprintf("its worker is %s", curState)
		}
	case slotRetired:
		return ""
	}
	if (sl.next != nil) != (sl.phase == slotRecycling) {
		return fmt.Sprintf("replacement %v", sl.next != nil)
	}
	if !sl.wake.IsZero() {
		return "a restart is scheduled"
	}
	return ""
}

// checkSteering: the steering targets of every steered listener are
// exactly the sockets of the workers that may take connections (ready,
// not retired, of the serving generation, or of a generation on probation
// only for a rolling reload's passed slot), the newest generation's in
// each slot; with none such, the kernel keeps the previous choice.
func (m *sim) checkSteering() {
	s := m.s
	if s.phase == MasterStopping || s.phase == MasterHandedOver {
		return
	}
	eligible := func(g *generation, sl *slot) bool {
		w := sl.cur
		if w == nil || w.state != Ready || sl.retired() || !w.proc.(*simProc).alive || w.away != "" {
			return false
		}
		switch g.phase {
		case GenServing:
			return true
		case GenStarting:
			return !s.cfg.TakeOver
		case GenProbation:
			return sl.phase == slotPassed
		}
		return false
	}
	for _, grp := range m.groups {
		var want []steer.Target
		n := 0
		for _, g := range s.gens {
			n = max(n, len(g.slots))
		}
		for i := 0; i < n; i++ {
			for j := len(s.gens) - 1; j >= 0; j-- {
				g := s.gens[j]
				if i < len(g.slots) && listensOn(g, grp) && eligible(g, g.slots[i]) {
					want = append(want, steer.Target{Slot: i, Bank: g.slots[i].cur.bank})
					break
				}
			}
		}
		if len(want) == 0 {
			continue
		}
		if !slices.Equal(want, grp.targets) {
			m.violate("listener %s steers to %v, want %v (%s)", grp.name, grp.targets, want, m.describe())
		}
		for _, g := range s.gens {
			if g.phase != GenProbation || !listensOn(g, grp) {
				continue
			}
			for _, t := range grp.targets {
				if t.Slot < len(g.slots) {
					if sl := g.slots[t.Slot]; sl.cur != nil && sl.cur.bank == t.Bank && sl.phase != slotPassed {
						m.violate("generation %d on probation gets connections in slot %d", g.num, t.Slot)
					}
				}
			}
		}
	}
}

// final checks the end: the master finished, no process is left, every
// request got its one answer.
func (m *sim) final() {
	s := m.s
	if !s.finished() {
		m.violate("the master did not finish 10 minutes after SIGTERM or hand-over: %s", m.describe())
	}
	for _, p := range m.procs {
		if p.alive || p.leftover {
			m.violate("process %d (gen %d slot %d) left after the end", p.id, p.gen, p.slot)
		}
		if !p.released {
			m.violate("process %d never released", p.id)
		}
	}
	for _, q := range m.reqs {
		if q.answers != 1 {
			m.violate("request %d answered %d times", q.id, q.answers)
		}
		select {
		case <-q.c:
		default:
			m.violate("request %d: nothing on its channel", q.id)
		}
	}
	for i, c := range m.scales {
		select {
		case <-c:
		default:
			m.violate("scale request %d never answered", i+1)
		}
	}
	if s.refused > 0 {
		m.violate("%d transitions refused", s.refused)
	}
}

// simulate runs one seed and returns its violations (and trace, if
// verbose).
func simulate(t testing.TB, seed uint64, steps int, dir string, verbose, buggy bool) (fails, trace []string, stepsRun int) {
	r := simulateCounting(t, seed, steps, dir, verbose, buggy)
	return r.fails, r.trace, r.steps
}

// simRun is what one schedule did.
type simRun struct {
	fails, trace []string
	steps        int
	restarts     map[string]int // the supervisor's restart counters: which paths the schedule took
	gaveUp       bool           // the first generation gave up (Config.StartAttempts): the schedule ended early
}

// simulateCounting runs one seed and says what it did.
func simulateCounting(t testing.TB, seed uint64, steps int, dir string, verbose, buggy bool) simRun {
	m := newSim(t, seed, dir)
	defer m.close()
	m.verbose, m.buggyCancel = verbose, buggy
	m.run(steps)
	return simRun{fails: m.fails, trace: m.tr, steps: m.step, restarts: m.s.restarts, gaveUp: m.s.giveUp != nil}
}

// shrink finds the shortest prefix of the schedule (in steps) that still
// fails.
func shrink(t testing.TB, seed uint64, steps int, dir string, buggy bool) int {
	lo, hi := 0, steps
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if f, _, _ := simulate(t, seed, mid, dir, false, buggy); len(f) > 0 {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

func TestSimulate(t *testing.T) {
	dir := t.TempDir()
	if *simSeed != 0 {
		fails, tr, _ := simulate(t, *simSeed, *simSteps, dir, true, false)
		for _, l := range tr {
			t.Log(l)
		}
		for _, f := range fails {
			t.Error(f)
		}
		return
	}
	n := *simSeeds
	if v := os.Getenv("HANDOFF_SIM_SOAK"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("HANDOFF_SIM_SOAK=%q: %v", v, err)
		}
	}
	if raceEnabled {
		n = max(n/4, 1) // the race detector slows the loop several times over; the seeds are the same kind
	} else if testing.Short() && os.Getenv("HANDOFF_SIM_SOAK") == "" {
		n = max(n/5, 1)
	}
	base := uint64(time.Now().UnixNano())
	if v := os.Getenv("HANDOFF_SIM_BASE"); v != "" {
		base, _ = strconv.ParseUint(v, 10, 64)
	}
	start := time.Now()
	steps, gaveUp := 0, 0
	var rest []int // the steps of each schedule that did not end early
	kinds := map[string]int{}
	for i := 0; i < n; i++ {
		seed := base + uint64(i)*0x9e3779b97f4a7c15
		if seed == 0 {
			seed = 1
		}
		r := simulateCounting(t, seed, *simSteps, dir, false, false)
		for kind, n := range r.restarts {
			kinds[kind] += n
		}
		steps += r.steps
		if r.gaveUp {
			gaveUp++
		} else {
			rest = append(rest, r.steps)
		}
		if len(r.fails) > 0 {
			short := shrink(t, seed, *simSteps, dir, false)
			t.Fatalf("seed %d failed (shrunk to %d steps):\n  %s\nreplay: go test ./workers -run 'TestSimulate$' -sim.seed %d -sim.steps %d -v", seed, short, strings.Join(r.fails, "\n  "), seed, short)
		}
	}
	d := time.Since(start)
	slices.Sort(rest)
	minSteps, median := 0, 0
	if len(rest) > 0 {
		minSteps, median = rest[0], rest[len(rest)/2]
	}
	summary := fmt.Sprintf("%d schedules (%d ended early: first generation gave up), min/median steps of the rest %d/%d, %d steps in all, %.0f steps/s, %s, 0 invariant violations", n, gaveUp, minSteps, median, steps, float64(steps)/d.Seconds(), d.Round(time.Millisecond))
	t.Log(summary)
	// A master ends only in a schedule's last hundred steps (the last
	// third of a short one): every schedule but those that gave up runs
	// at least that long.
	if want := max(*simSteps-100, *simSteps*2/3); len(rest) > 0 && minSteps < want {
		t.Errorf("a schedule that did not give up ran %d steps, want at least %d", minSteps, want)
	}
	fmt.Printf("simulator: %s; restarts by kind %v\n", summary, kinds)
}

// The invariants catch the bug a reader found: a client that stops
// waiting made the runner close the listeners its reload had opened, while
// the supervisor went on to commit a generation that uses them.
func TestSimulateCatchesCloseOnCancel(t *testing.T) {
	dir := t.TempDir()
	for seed := uint64(1); seed <= 2000; seed++ {
		fails, _, _ := simulate(t, seed, *simSteps, dir, false, true)
		if len(fails) == 0 {
			continue
		}
		for _, f := range fails {
			if strings.Contains(f, "which the master closed") || strings.Contains(f, "steers to") {
				t.Logf("seed %d catches it: %s", seed, f)
				if f2, _, _ := simulate(t, seed, *simSteps, dir, false, false); len(f2) > 0 {
					t.Fatalf("seed %d fails without the bug too: %v", seed, f2)
				}
				return
			}
		}
	}
	t.Fatal("no seed of 2000 caught listeners closed under a committed generation")
}

// A seed replays exactly: the same trace twice.
func TestSimulateReplays(t *testing.T) {
	dir := t.TempDir()
	for seed := uint64(1); seed <= 5; seed++ {
		_, a, _ := simulate(t, seed, *simSteps, dir, true, false)
		_, b, _ := simulate(t, seed, *simSteps, dir, true, false)
		if !slices.Equal(a, b) {
			t.Fatalf("seed %d: two runs differ (%d and %d trace lines)", seed, len(a), len(b))
		}
		if len(a) < 50 {
			t.Fatalf("seed %d: trace of %d lines; the schedule did little", seed, len(a))
		}
	}
}

// Seeds that found bugs, replayed as they were found (a change to the
// supervisor may change what their schedules do, but each still has to
// pass).
func TestSimulateFoundSeeds(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		seed  uint64
		steps int
		bug   string
	}{
		// A scale-down retired a first generation's ready slot whose
		// worker stayed counted ready until its retirement began, so the
		// generation never saw every slot ready and stayed starting.
		{10597414080743149949, 293, "retired slot counted ready"},
		// A scale-down during a failed reload retired the first
		// generation's slots that were not ready; its one remaining
		// worker was, but only a worker's READY=1 made a starting
		// generation serve, so it stayed starting (CI, 2026-12-06).
		{3645306447100478841, 297, "scale-down left only ready slots"},
	} {
		if fails, _, _ := simulate(t, c.seed, c.steps, dir, false, false); len(fails) > 0 {
			t.Errorf("seed %d (%s): %s\nreplay: go test ./workers -run 'TestSimulate$' -sim.seed %d -sim.steps %d -v", c.seed, c.bug, strings.Join(fails, "\n  "), c.seed, c.steps)
		}
	}
}
