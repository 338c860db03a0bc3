package workers

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ScaleResult is the outcome of a change of the number of workers.
type ScaleResult struct {
	Workers int    `json:"workers"`
	Error   string `json:"error,omitempty"`
}

// scaleOp changes the serving generation's number of workers.
type scaleOp struct {
	n, delta int // the target, or a change of it (SIGTTIN, SIGTTOU)
	reply    chan ScaleResult
	from, to int
	added    []*slot // scaling up: the new slots, until each was ready
	removed  []*slot // scaling down: the retired slots, until each is gone
}

// Scale sets the number of workers of the serving generation (n > 0), or
// changes it by delta (n == 0), like Unicorn's and einhorn's SIGTTIN and
// SIGTTOU. New workers are ready-checked like any; workers removed are
// retired gracefully, highest slots first. Reloads keep the new count.
// The result comes once every new worker was ready, or every removed one
// is gone; it waits for a reload under way.
func (s *Supervisor) Scale(n, delta int) <-chan ScaleResult {
	c := make(chan ScaleResult, 1)
	if !s.post(func() {
		if s.phase == MasterStopping || s.phase == MasterHandedOver {
			c <- ScaleResult{Workers: s.cfg.Workers, Error: "master is no longer running workers (" + string(s.phase) + ")"}
			return
		}
		s.queue = append(s.queue, &op{scale: &scaleOp{n: n, delta: delta, reply: c}})
		s.dirty = true
		s.nextOp()
	}) {
		c <- ScaleResult{Error: "master is no longer running workers"}
	}
	return c
}

func (s *Supervisor) beginScale(o *scaleOp) {
	g := s.serving
	o.from = len(g.slots)
	o.to = o.n
	if o.n == 0 {
		o.to = o.from + o.delta
	}
	if o.to < 1 || o.to > MaxWorkers {
		o.reply <- ScaleResult{Workers: o.from, Error: fmt.Sprintf("cannot run %d workers: want 1 to %d", o.to, MaxWorkers)}
		s.nextOp()
		return
	}
	if o.to == o.from {
		o.reply <- ScaleResult{Workers: o.to}
		s.nextOp()
		return
	}
	for _, l := range s.cfg.Listeners {
		if g := l.group(); g != nil {
			if err := g.Grow(o.to); err != nil {
				o.reply <- ScaleResult{Workers: o.from, Error: fmt.Sprintf("listener %s: %v", l.Name, err)}
				s.nextOp()
				return
			}
		}
	}
	s.op = o
	s.cfg.Workers = o.to
	s.log.Info("scaling", "generation", g.num, "from", o.from, "to", o.to)
	if o.to > o.from {
		for i := o.from; i < o.to; i++ {
			sl := newSlot(g, i, s.freeBank(i))
			g.slots = append(g.slots, sl)
			g.active++
			o.added = append(o.added, sl)
			s.startWorker(sl)
		}
	} else {
		for i := o.from - 1; i >= o.to; i-- {
			o.removed = append(o.removed, g.slots[i])
			s.queueRetire(g.slots[i])
		}
		s.pumpRetire()
	}
	s.advanceScale()
}

// advanceScale ends the scale op once its new workers were all ready,
// or its removed ones are all gone; a new worker that fails ends it with
// the reason (the slot stays, and keeps trying with backoff).
func (s *Supervisor) advanceScale() {
	o := s.scaling()
	if o == nil {
		return
	}
	var err error
	o.added = slices.DeleteFunc(o.added, func(sl *slot) bool { return sl.ready() })
	for _, sl := range o.added {
		if sl.phase == slotBackoff {
			err = fmt.Errorf("slot %d failed to start; it keeps trying", sl.index)
		}
	}
	if len(o.added) > 0 && err == nil {
		return
	}
	if slices.ContainsFunc(o.removed, (*slot).live) {
		return
	}
	if len(o.removed) > 0 {
		g := s.serving
		g.slots = g.slots[:o.to]
	}
	s.op = nil
	res := ScaleResult{Workers: o.to}
	if err != nil {
		res.Error = err.Error()
		s.lim.Log(s.log, hclog.Warn, "scaled, but a new worker is not ready", "workers", o.to, "error", err)
	} else {
		s.log.Info("scaled", "workers", o.to)
	}
	o.reply <- res
	s.dirty = true
	s.nextOp()
}

// Memory recycling (PM2's max_memory_restart, done gracefully): a worker
// whose process tree's resident memory stays above Config.MaxMemory for
// memorySamples samples in a row is replaced in its slot: a new worker
// starts on the slot's other steered socket, and once it is ready
// connections go to it and the old one is retired like any (steered
// drain, stop signal). One at a time, queued like a reload.

// memoryEvery is how often workers' memory is sampled with a limit set.
const memoryEvery = time.Second

// memorySamples is how many samples in a row above the limit trigger a
// replacement.
const memorySamples = 3

// recycleOp replaces one worker.
type recycleOp struct {
	sl  *slot
	old *worker
	new *worker
	rss int64
	// as counts the replacement in Counters.Restarts: "memory", or
	// "watchdog" or "unhealthy" (liveness.go); why says why.
	as, why string
}

// overMemory records a sample of w's memory and queues its replacement
// once it has been above the limit long enough.
func (s *Supervisor) overMemory(sl *slot, w *worker, rss int64) {
	if s.cfg.MaxMemory <= 0 || sl.cur != w || rss <= s.cfg.MaxMemory {
		w.overSamples = 0
		return
	}
	if w.overSamples++; w.overSamples != memorySamples {
		return
	}
	for _, o := range s.queue {
		if o.recycle != nil && o.recycle.old == w {
			return
		}
	}
	s.lim.Log(s.log, hclog.Warn, "worker above the memory limit, replacing it", "generation", sl.gen.num, "slot", sl.index, "pid", w.proc.pid(), "rss", rss, "max_memory", s.cfg.MaxMemory)
	s.queue = append(s.queue, &op{recycle: &recycleOp{sl: sl, old: w, rss: rss, as: "memory", why: fmt.Sprintf("its memory (%d bytes) was above the limit", rss)}})
	s.dirty = true
	s.nextOp()
}

func (s *Supervisor) beginRecycle(o *recycleOp) {
	sl := o.sl
	if sl.cur != o.old || !sl.ready() || sl.gen.phase != GenServing {
		s.nextOp() // it is gone already
		return
	}
	w, err := s.spawn(sl, 1-o.old.bank)
	if err != nil {
		s.lim.Log(s.log, hclog.Error, "cannot start a replacement for a worker", "why", o.why, "slot", sl.index, "error", err)
		s.nextOp()
		return
	}
	sl.gen.workers++
	sl.next, o.new = w, w
	sl.to(slotRecycling, o.why)
	s.op = o
	s.dirty = true
}

// recycleReady: the replacement is ready: it takes the slot, and the old
// worker is retired.
func (s *Supervisor) recycleReady(sl *slot, w *worker) {
	o := s.recycling()
	if o == nil || o.new != w {
		return
	}
	sl.next = nil
	old := sl.drop()
	sl.cur, sl.bank = w, w.bank
	sl.markReady("its replacement is ready")
	sl.restarts++
	s.restarts[o.as]++
	s.resteer()
	if old != nil {
		old.retire(s.unrouted(old))
	}
	s.log.Info("worker replaced", "why", o.why, "generation", sl.gen.num, "slot", sl.index, "old_pid", o.old.proc.pid(), "new_pid", w.proc.pid())
	s.dirty = true
}

// recycleExited: the replacement ended before it was ready; the old
// worker serves on.
func (s *Supervisor) recycleExited(sl *slot, w *worker) {
	if sl.next == w {
		sl.next = nil
		sl.exiting = append(sl.exiting, w)
		if sl.phase == slotRecycling {
			sl.to(sl.curPhase(), "its replacement exited before ready")
		}
		o := s.recycling()
		if o == nil || o.as == "memory" || sl.cur != o.old {
			s.lim.Log(s.log, hclog.Warn, "the replacement of a worker above the memory limit failed; the worker serves on", "slot", sl.index)
			return
		}
		// A worker that does not serve cannot serve on: it is killed and
		// replaced in place, as a hung one is.
		s.lim.Log(s.log, hclog.Warn, "the replacement of a worker that does not serve failed; killing it to restart its slot", "slot", sl.index, "why", o.why)
		o.old.kill()
	}
}

// advanceRecycle ends the recycle op once the old worker is gone (or the
// replacement failed and is gone).
func (s *Supervisor) advanceRecycle() {
	o := s.recycling()
	if o == nil || o.sl.next != nil {
		return
	}
	if slices.Contains(o.sl.exiting, o.old) || slices.Contains(o.sl.exiting, o.new) {
		return
	}
	s.op = nil
	s.nextOp()
}

// sampleMemory measures the serving workers' process trees off the
// supervisor's goroutine, and posts the results back to it.
func (s *Supervisor) sampleMemory() {
	if s.sampling || s.serving == nil {
		return
	}
	type sample struct {
		sl  *slot
		w   *worker
		rss int64
		cpu float64
	}
	var todo []sample
	for _, sl := range s.serving.slots {
		if sl.cur != nil {
			todo = append(todo, sample{sl: sl, w: sl.cur})
		}
	}
	s.sampling = true
	s.env.async(func() {
		for i := range todo {
			todo[i].rss, todo[i].cpu = s.usage(todo[i].w.proc)
		}
	}, func() {
		s.sampling = false
		for _, x := range todo {
			x.w.rss, x.w.cpu = x.rss, x.cpu
			s.overMemory(x.sl, x.w, x.rss)
		}
	})
}
