package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// RolloverPhase is where a reload is. Every change goes through
// rollover.transition, on the supervisor's goroutine.
type RolloverPhase string

// A worker reload moves starting → probation → retiring → done; a
// rolling one goes through those phases once per slot. A failure in
// starting or probation moves it to rolling back → done. A master
// upgrade is upgrading → done.
const (
	// RollStarting: new workers are starting (surge: all of them;
	// rolling: the next slot's).
	RollStarting RolloverPhase = "starting"
	// RollProbation: every new worker started is ready; each must stay
	// up the minimum uptime after READY while the old generation serves.
	RollProbation RolloverPhase = "probation"
	// RollRetiring: old workers are being stopped (surge: after the new
	// generation took over; rolling: the slot just replaced).
	RollRetiring RolloverPhase = "retiring"
	// RollRollingBack: a new worker failed; the new generation is being
	// stopped, and (rolling) the old slots already retired restarted.
	RollRollingBack RolloverPhase = "rolling back"
	// RollUpgrading: a new master is starting (self-upgrade).
	RollUpgrading RolloverPhase = "upgrading master"
	// RollDone: over; the result is reported.
	RollDone RolloverPhase = "done"
)

// op is a request waiting for its turn, one at a time: a worker reload
// (requests made meanwhile coalesce into one), a master upgrade, a change
// of the number of workers, or the replacement of a worker above the
// memory limit.
type op struct {
	master  bool
	cfg     *Config   // the configuration of the newest request it serves
	keep    bool      // with cfg: keep the running number of workers
	at      time.Time // the earliest request it serves
	waiters []waiter
	scale   *scaleOp
	recycle *recycleOp
}

// rollover is one reload under way.
type rollover struct {
	num       int
	master    bool
	strategy  Strategy
	phase     RolloverPhase
	old, g    *generation
	step      int       // rolling: the slot being replaced
	lastReady time.Time // when the last new worker became ready
	started   time.Time
	serving   time.Duration
	err       error
	failedPID int      // the new worker whose end failed it, if one did
	stderr    []string // that worker's last stderr lines (tail.go)
	inherited bool     // or its stderr was the master's, not read
	waiters   []waiter
	probation timer              // ends the minimum uptime of the new workers
	cancel    context.CancelFunc // master upgrade
	cfg       *Config            // the new generation's
	s         *Supervisor
}

// rollMoves are a reload's allowed transitions ("" is a reload that
// has not begun: it may end at once, refused).
var rollMoves = transitions[RolloverPhase]{
	"":              {RollStarting, RollUpgrading, RollDone},
	RollStarting:    {RollProbation, RollRetiring, RollRollingBack, RollDone},
	RollProbation:   {RollRetiring, RollRollingBack, RollDone},
	RollRetiring:    {RollStarting, RollRollingBack, RollDone},
	RollRollingBack: {RollDone},
	RollUpgrading:   {RollDone},
}

// transition moves the rollover to phase to and logs why.
func (r *rollover) transition(to RolloverPhase, why string) {
	from := r.phase
	if from == to {
		return
	}
	if !rollMoves.allows(from, to) {
		r.s.refuse("reload", from, to, why)
		return
	}
	r.phase = to
	r.s.log.Debug("reload phase", "generation", r.num, "phase", string(to), "was", string(from), "why", why)
	r.s.dirty = true
}

// enqueue adds a reload request; a worker reload joins the one already
// waiting.
func (s *Supervisor) enqueue(req ReloadRequest, c chan ReloadResult) {
	wt := waiter{c: c, outcome: req.Outcome}
	if s.phase == MasterStopping || s.phase == MasterHandedOver {
		wt.answer(ReloadResult{Error: "master is no longer running workers (" + string(s.phase) + ")", Master: req.Master})
		return
	}
	// Requests coalesce into the reload waiting for its turn, unless both
	// bring a configuration: each configuration's outcome is its own.
	if n := len(s.queue); !req.Master && n > 0 && s.queue[n-1].isReload() && (req.Config == nil || s.queue[n-1].cfg == nil) {
		last := s.queue[n-1]
		last.waiters = append(last.waiters, wt)
		if req.At.Before(last.at) {
			last.at = req.At
		}
		if req.Config != nil {
			last.cfg, last.keep = req.Config, req.KeepWorkers
		}
	} else {
		s.queue = append(s.queue, &op{master: req.Master, cfg: req.Config, keep: req.KeepWorkers, at: req.At, waiters: []waiter{wt}})
	}
	s.dirty = true
	s.nextOp()
}

// waiter is one reload request waiting for its outcome.
type waiter struct {
	c       chan ReloadResult  // buffered: never blocks the loop
	outcome func(ReloadResult) // ReloadRequest.Outcome, if set
}

// answer delivers res: first to the request's Outcome, which commits or
// releases what the caller prepared for it, then to whoever waits. It is
// called exactly once per request, whether or not anyone still waits.
func (wt waiter) answer(res ReloadResult) {
	if wt.outcome != nil {
		wt.outcome(res)
	}
	wt.c <- res
}

// isReload reports whether o is a worker reload.
func (o *op) isReload() bool { return !o.master && o.scale == nil && o.recycle == nil }

// busy reports whether an op runs.
func (s *Supervisor) busy() bool { return s.op != nil }

// operation is what runs, one at a time: a reload or master upgrade
// (*rollover), a change of the number of workers (*scaleOp), or the
// replacement of a worker above the memory limit (*recycleOp).
type operation interface{ kind() string }

func (*rollover) kind() string  { return "reload" }
func (*scaleOp) kind() string   { return "scale" }
func (*recycleOp) kind() string { return "recycle" }

// rolling is the reload under way, if that is what runs.
func (s *Supervisor) rolling() *rollover { r, _ := s.op.(*rollover); return r }

// scaling is the change of the number of workers under way, if that is
// what runs.
func (s *Supervisor) scaling() *scaleOp { o, _ := s.op.(*scaleOp); return o }

// recycling is the replacement of a worker under way, if that is what
// runs.
func (s *Supervisor) recycling() *recycleOp { o, _ := s.op.(*recycleOp); return o }

// nextOp starts the next queued request, if any and none runs.
func (s *Supervisor) nextOp() {
	if s.busy() || len(s.queue) == 0 {
		return
	}
	o := s.queue[0]
	s.queue = s.queue[1:]
	switch {
	case o.scale != nil:
		s.beginScale(o.scale)
		return
	case o.recycle != nil:
		s.beginRecycle(o.recycle)
		return
	}
	cfg, err := s.reloadConfig(o.cfg, o.keep)
	r := &rollover{master: o.master, strategy: cfg.Strategy, started: o.at, waiters: o.waiters, s: s, cfg: cfg}
	s.op = r
	if o.master {
		s.beginUpgrade(r)
		return
	}
	s.lastGen++
	r.num = s.lastGen
	s.log.Info("reload started", "generation", r.num, "strategy", string(r.strategy))
	s.emit(Event{Kind: EventReloading, Generation: r.num})
	if err != nil {
		s.endRollover(err)
		return
	}
	for _, l := range cfg.Listeners {
		// A listener opened for this reload has the slots of the file's
		// count; the count kept may be larger (scaled since).
		if grp := l.group(); grp != nil {
			if err := grp.Grow(cfg.Workers); err != nil {
				s.endRollover(fmt.Errorf("listener %s: %w", l.Name, err))
				return
			}
		}
	}
	g, err := s.newGenerationWith(r.num, GenProbation, cfg)
	if err != nil {
		s.endRollover(err)
		return
	}
	r.old, r.g = s.serving, g
	s.gens = append(s.gens, g)
	r.transition(RollStarting, "reload requested")
	if r.strategy == Surge {
		for _, sl := range g.slots {
			s.startWorker(sl)
		}
	} else {
		s.startWorker(g.slots[0])
	}
	s.advance()
}

// beginUpgrade runs Config.UpgradeMaster on its own goroutine; its end
// comes back through upgradeDone.
func (s *Supervisor) beginUpgrade(r *rollover) {
	r.num = s.lastGen + 1
	if s.cfg.UpgradeMaster == nil {
		s.endRollover(errors.New("master upgrades are not available"))
		return
	}
	s.log.Info("upgrading the master: starting the new handoff binary", "generation", r.num)
	s.emit(Event{Kind: EventReloading, Generation: r.num})
	r.transition(RollUpgrading, "master upgrade requested")
	s.setPhase(MasterUpgrading, "master upgrade requested")
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	h := Handover{LastGeneration: s.lastGen}
	for _, sl := range s.serving.slots {
		h.Banks = append(h.Banks, sl.bank)
	}
	var err error
	s.env.async(func() {
		err = s.cfg.UpgradeMaster(ctx, h)
		cancel()
	}, func() { s.upgradeDone(r, err) })
}

func (s *Supervisor) upgradeDone(r *rollover, err error) {
	if s.phase == MasterStopping {
		if err == nil {
			s.log.Warn("a new master took over while this one was stopping; it serves on")
		}
		s.endRollover(errors.New("master stopping"))
		return
	}
	if err != nil {
		s.log.Error("master upgrade failed, this master keeps serving", "error", err)
		s.setPhase(s.runningPhase(), "master upgrade failed")
		// The new master may have steered connections to its own
		// workers before it failed: steer them back.
		clear(s.steered)
		s.steerDirty = true
		s.endRollover(fmt.Errorf("master upgrade failed: %w", err))
		return
	}
	r.serving = s.env.now().Sub(r.started)
	s.log.Info("new master serving; retiring this master's workers")
	s.setPhase(MasterHandedOver, "the new master serves")
	// The new master steers connections to its own workers now: ours
	// stop getting any from here on.
	now := s.env.now()
	for w := range s.routed {
		w.unroutedAt = now
	}
	clear(s.routed)
	clear(s.steered)
	clear(s.routedBy)
	s.failQueue("master handed over to a new master before the reload ran")
	s.endRollover(nil)
	// After the results are out: the runner stops its control socket on
	// this event, cancelling requests in progress, which then find their
	// results already delivered.
	s.emit(Event{Kind: EventHandedOver})
	for _, g := range s.gens {
		g.transition(GenRetiring, "handed over to a new master")
		for _, sl := range g.slots {
			s.queueRetire(sl)
		}
	}
	s.pumpRetire()
}

// advance moves the running worker reload on, after any event that may
// let it: a worker ready or gone, a probation timer.
func (s *Supervisor) advance() {
	defer s.sweep()
	r := s.rolling()
	if r == nil || r.master {
		return
	}
	switch r.phase {
	case RollStarting, RollProbation:
		s.advanceProbation(r)
	case RollRetiring:
		if s.retiring() {
			return
		}
		if r.strategy == Rolling && r.g.phase == GenProbation {
			s.nextRollingStep(r)
			return
		}
		if !r.old.live() {
			s.endRollover(nil)
		}
	case RollRollingBack:
		if !r.g.live() {
			s.endRollover(r.err)
		}
	}
}

// advanceProbation checks the new workers: once every one started is
// ready and has been for the minimum uptime, the reload goes on. (With
// the rolling strategy, the slots before the current one passed already:
// had one exited since, the reload would have failed.)
func (s *Supervisor) advanceProbation(r *rollover) {
	if r.strategy == Surge && !r.g.allReady() || r.strategy == Rolling && !r.g.slots[r.step].ready() {
		return
	}
	if wait := r.lastReady.Add(s.cfg.MinUptime).Sub(s.env.now()); wait > 0 {
		r.transition(RollProbation, "new workers ready")
		r.probation.set(s.env, wait, func() {
			if s.rolling() == r {
				s.advance()
			}
		})
		return
	}
	if r.strategy == Surge {
		s.commit(r)
		r.transition(RollRetiring, "new generation passed probation")
		for _, sl := range r.old.slots {
			s.queueRetire(sl)
		}
		s.pumpRetire()
		s.advance()
		return
	}
	r.transition(RollRetiring, fmt.Sprintf("slot %d passed probation", r.step))
	r.g.slots[r.step].to(slotPassed, "passed probation")
	s.steerDirty = true
	if r.step < len(r.old.slots) {
		s.queueRetire(r.old.slots[r.step])
		s.pumpRetire()
	}
	s.advance()
}

// nextRollingStep starts the next slot of a rolling reload, or, after
// the last, commits it.
func (s *Supervisor) nextRollingStep(r *rollover) {
	if r.step+1 < len(r.g.slots) {
		r.step++
		r.transition(RollStarting, fmt.Sprintf("replacing slot %d", r.step))
		s.startWorker(r.g.slots[r.step])
		s.advance()
		return
	}
	s.commit(r)
	for _, sl := range r.old.slots[min(len(r.g.slots), len(r.old.slots)):] {
		s.queueRetire(sl)
	}
	s.pumpRetire()
	s.advance()
}

// reloadConfig is the configuration a reload's generation runs with: the
// current one, with what the request changes.
func (s *Supervisor) reloadConfig(next *Config, keepWorkers bool) (*Config, error) {
	c := s.cfg
	if next == nil {
		return &c, nil
	}
	c.Command, c.Environ, c.Listeners = next.Command, next.Environ, next.Listeners
	if !keepWorkers {
		c.Workers = next.Workers
	}
	c.ReadyDelay, c.Probe, c.ReadyTimeout, c.DrainTimeout = next.ReadyDelay, next.Probe, next.ReadyTimeout, next.DrainTimeout
	c.HangTimeout, c.Watchdog, c.Health = next.HangTimeout, next.Watchdog, next.Health
	c.StopSignal, c.MinUptime, c.Strategy, c.RetireParallel, c.MaxMemory = next.StopSignal, next.MinUptime, next.Strategy, next.RetireParallel, next.MaxMemory
	if c.Environ == nil {
		c.Environ = os.Environ()
	}
	c, err := c.withDefaults()
	if err != nil {
		return &s.cfg, fmt.Errorf("new configuration: %w", err)
	}
	return &c, nil
}

// commit makes the new generation the serving one.
func (s *Supervisor) commit(r *rollover) {
	r.serving = s.env.now().Sub(r.started)
	s.cfg = *r.cfg
	r.g.transition(GenServing, "passed probation")
	r.old.transition(GenRetiring, fmt.Sprintf("generation %d serves", r.g.num))
	s.steerDirty = true
	for _, sl := range r.old.slots {
		sl.cancelRestart()
	}
	s.log.Info("generation serving, retiring previous", "generation", r.g.num, "previous", r.old.num)
	s.nowServing(r.g)
}

// failRollover rolls back: the new generation is stopped and (rolling)
// the old slots already retired start again. The reload ends once the
// new generation is gone.
func (s *Supervisor) failRollover(err error, v verdict) {
	r := s.rolling()
	if r == nil || r.master || r.phase == RollRollingBack {
		return
	}
	r.err, r.failedPID, r.stderr, r.inherited = err, v.pid, v.stderr, v.inherited
	r.transition(RollRollingBack, err.Error())
	if r.strategy == Rolling {
		for _, sl := range r.old.slots {
			if sl.retired() && r.old.replaces() {
				sl.unretire("the reload rolls back")
				sl.failures = 0
				s.retireQueue = slices.DeleteFunc(s.retireQueue, func(x *slot) bool { return x == sl })
				s.retireDraining = slices.DeleteFunc(s.retireDraining, func(x *slot) bool { return x == sl })
				if w := sl.reclaim(); w != nil {
					// Its worker was waiting for its queues to empty,
					// not yet signalled: it serves on.
					s.log.Info("keeping a worker of the previous generation", "generation", r.old.num, "slot", sl.index, "pid", w.proc.pid())
					s.steerDirty = true
					continue
				}
				s.log.Info("restarting a slot of the previous generation", "generation", r.old.num, "slot", sl.index)
				s.startWorker(sl)
			}
		}
	}
	r.g.transition(GenRetiring, "its reload failed")
	for _, sl := range r.g.slots {
		s.retireNow(sl)
	}
	s.advance()
}

// endRollover reports the reload's result and starts the next request.
func (s *Supervisor) endRollover(err error) {
	r := s.rolling()
	r.transition(RollDone, "over")
	r.probation.clear()
	s.op = nil
	res := ReloadResult{Generation: r.num, Master: r.master, Started: r.started, Serving: r.serving, Duration: s.env.now().Sub(r.started)}
	if err != nil {
		res.Error = err.Error()
		res.FailedPID, res.Stderr, res.StderrInherited = r.failedPID, r.stderr, r.inherited
		if !r.master {
			s.log.Error("reload failed, previous generation keeps serving", "generation", r.num, "error", err, "duration", res.Duration.Round(time.Millisecond).String())
		}
	} else {
		res.OK = true
		s.log.Info("reload done", "generation", r.num, "serving_after", res.Serving.Round(time.Millisecond).String(), "duration", res.Duration.Round(time.Millisecond).String())
	}
	s.lastReload = &res
	key := map[bool]string{true: "ok", false: "failed"}[res.OK]
	if r.master {
		key = "master_" + key
	}
	s.reloads[key]++
	s.emit(Event{Kind: EventReloaded, Generation: r.num, Reload: &res})
	for _, wt := range r.waiters {
		wt.answer(res)
	}
	s.nextOp()
}

// failQueue answers every waiting request with an error.
func (s *Supervisor) failQueue(why string) {
	for _, o := range s.queue {
		for _, wt := range o.waiters {
			wt.answer(ReloadResult{Error: why, Master: o.master})
		}
		if o.scale != nil {
			o.scale.reply <- ScaleResult{Workers: s.cfg.Workers, Error: why}
		}
	}
	s.queue = nil
}
