package workers

import (
	"fmt"
	"time"
)

// Restart policy (einhorn's rule: throttle crash loops, not healthy
// workers).
//
// A worker that exits before it is ready failed: its slot waits
// backoffMin, doubling with each consecutive failure up to backoffMax,
// before the next start, so a binary that cannot start never spins the
// CPU. So did a worker that became ready and then exited on its own (an
// exit status, or a crash such as SIGSEGV or SIGABRT) within the minimum
// uptime: a crash loop that passes READY=1 (gunicorn sends it before
// importing the app) backs off too.
//
// Any other exit of a ready worker is replaced at once, and resets the
// backoff: it served its minimum uptime, or it was killed from outside
// (the OOM killer's or an operator's SIGKILL, SIGTERM, …), which says
// nothing about the binary. A slot whose workers keep becoming ready is
// not in a crash loop, so a storm of kills never backs off a served
// generation, and every slot is back as soon as its worker is ready.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
)

// backoffFor is the wait before the next start after n consecutive
// failures (n ≥ 1).
func backoffFor(n int) time.Duration {
	d := backoffMin
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// verdict is what an exited worker's end says about its slot.
type verdict struct {
	failed bool
	reason string
	killed bool     // from outside, after ready
	as     string   // the kind it counts as, if not one of the above
	pid    int      // the worker's, if one was started
	stderr []string // the last lines it wrote to stderr, where the master reads them
	// inherited: its stderr was the master's (OutputInherit), not read
	inherited bool
}

// kind names the verdict for Counters.Restarts.
func (v verdict) kind() string {
	switch {
	case v.as != "":
		return v.as
	case v.failed:
		return "failed"
	case v.killed:
		return "killed"
	}
	return "exited"
}

// judge applies the restart policy to a worker that became ready at
// readyAt (zero if never) and ended at exitedAt as e; failure says why
// it was killed before ready, if the master killed it.
func judge(readyAt, exitedAt time.Time, e exitInfo, failure string, minUptime time.Duration) verdict {
	switch up := exitedAt.Sub(readyAt); {
	case readyAt.IsZero() && failure != "":
		return verdict{failed: true, reason: failure}
	case readyAt.IsZero():
		return verdict{failed: true, reason: e.String() + " before ready"}
	case e.killedFromOutside():
		return verdict{reason: e.String(), killed: true}
	case up < minUptime:
		return verdict{failed: true, reason: fmt.Sprintf("%s %s after ready", e, up.Round(time.Millisecond))}
	}
	return verdict{reason: e.String()}
}

// slotPhase is where a slot is in its life. Every change goes through
// slot.to, on the supervisor's goroutine, which logs why and refuses a
// move slotMoves does not hold.
type slotPhase string

const (
	// slotEmpty: no worker and none scheduled: before its first start,
	// between a worker's exit and the restart policy's verdict, or in a
	// generation that no longer replaces workers.
	slotEmpty slotPhase = "empty"
	// slotStarting: its worker was started and is not ready yet.
	slotStarting slotPhase = "starting"
	// slotReady: its worker is ready (counted in gen.ready).
	slotReady slotPhase = "ready"
	// slotPassed: ready, and (a rolling reload's slot) passed
	// probation: it takes connections while its generation is still on
	// probation.
	slotPassed slotPhase = "passed"
	// slotRecycling: its ready worker serves while a replacement (next)
	// starts on the slot's other steered socket (memory, watchdog,
	// health).
	slotRecycling slotPhase = "recycling"
	// slotBackoff: no worker; a restart is scheduled at wake.
	slotBackoff slotPhase = "backoff"
	// slotRetired: the slot runs no more workers; its last one may still
	// be queued for retirement, draining or exiting. A rolling reload's
	// rollback can give it back its worker, or start one.
	slotRetired slotPhase = "retired"
)

// slotMoves are a slot's allowed transitions.
var slotMoves = transitions[slotPhase]{
	slotEmpty:     {slotStarting, slotReady, slotBackoff, slotRetired},
	slotStarting:  {slotReady, slotEmpty, slotRetired},
	slotReady:     {slotPassed, slotRecycling, slotEmpty, slotRetired},
	slotPassed:    {slotRecycling, slotEmpty, slotRetired},
	slotRecycling: {slotReady, slotStarting, slotRetired},
	slotBackoff:   {slotStarting, slotEmpty, slotRetired},
	slotRetired:   {slotEmpty, slotStarting, slotReady},
}

// counted reports whether a slot in phase p has a ready worker counted in
// gen.ready.
func (p slotPhase) counted() bool {
	return p == slotReady || p == slotPassed || p == slotRecycling
}

// slot is one position (HANDOFF_WORKER) in a generation. Its state is the
// supervisor goroutine's.
type slot struct {
	gen   *generation
	index int
	bank  int // which of the slot's two steered sockets its workers get
	phase slotPhase

	cur        *worker   // the worker the slot runs, until it exits or is stopped
	next       *worker   // its replacement (slotRecycling), until ready
	exiting    []*worker // exited or being stopped, tree not gone yet
	restarts   int
	lastExit   string    // how its last worker that was not stopped on purpose ended
	lastStderr []string  // and the last lines it wrote to stderr (tail.go)
	lastKind   string    // and its kind: failed, killed, exited, or a liveness rule
	failures   int       // consecutive: the backoff exponent
	wake       time.Time // slotBackoff: when the restart is scheduled
	timer      timer     // the restart after a backoff
}

// newSlot makes slot i of g, empty.
func newSlot(g *generation, i, bank int) *slot {
	return &slot{gen: g, index: i, bank: bank, phase: slotEmpty}
}

// to moves the slot to phase to and logs why; it keeps gen.ready and
// gen.active, the counts of ready and of not retired slots, in step.
func (sl *slot) to(to slotPhase, why string) {
	from := sl.phase
	if from == to {
		return
	}
	s := sl.gen.s
	if !slotMoves.allows(from, to) {
		s.refuse("slot", from, to, fmt.Sprintf("generation %d slot %d: %s", sl.gen.num, sl.index, why))
		return
	}
	sl.phase = to
	switch {
	case from.counted() && !to.counted():
		sl.gen.ready--
	case !from.counted() && to.counted():
		sl.gen.ready++
	}
	switch {
	case to == slotRetired:
		sl.gen.active--
	case from == slotRetired:
		sl.gen.active++
	}
	if to != slotBackoff {
		sl.wake = time.Time{}
	}
	s.log.Debug("slot phase", "generation", sl.gen.num, "slot", sl.index, "phase", string(to), "was", string(from), "why", why)
}

// ready reports whether the slot's worker is ready (and the slot not
// retired).
func (sl *slot) ready() bool { return sl.phase.counted() }

// retired reports whether the slot runs no more workers.
func (sl *slot) retired() bool { return sl.phase == slotRetired }

// setCur makes w, just started, the slot's worker.
func (sl *slot) setCur(w *worker) {
	sl.cur = w
	sl.gen.workers++
	sl.to(slotStarting, "worker started")
}

// markReady records that the slot's worker became ready. A retired slot
// stays retired: its worker is counted again only if a rollback gives it
// back (unretire).
func (sl *slot) markReady(why string) {
	if sl.phase == slotStarting || sl.phase == slotRecycling {
		sl.to(slotReady, why)
	}
}

// curPhase is the phase that fits the slot's current worker: ready,
// starting, or empty without one.
func (sl *slot) curPhase() slotPhase {
	switch {
	case sl.cur == nil:
		return slotEmpty
	case sl.cur.state == Ready:
		return slotReady
	}
	return slotStarting
}

// retire marks the slot as running no more workers, and forgets a
// scheduled restart.
func (sl *slot) retire(why string) {
	sl.cancelRestart()
	sl.to(slotRetired, why)
}

// unretire makes a retired slot run workers again: the phase its current
// worker (if it kept one) is in.
func (sl *slot) unretire(why string) {
	if sl.phase == slotRetired {
		sl.to(sl.curPhase(), why)
	}
}

// live reports whether a process of the slot is left.
func (sl *slot) live() bool { return sl.cur != nil || sl.next != nil || len(sl.exiting) > 0 }

// cancelRestart forgets a scheduled restart: a slot in backoff is empty
// again.
func (sl *slot) cancelRestart() {
	sl.timer.clear()
	if sl.phase == slotBackoff {
		sl.to(slotEmpty, "restart cancelled")
	}
}

// detach moves the slot's worker to the exiting list: what it does from
// now on is not judged. A slot that is not retired is empty then. It
// returns the worker, or nil.
func (sl *slot) detach(why string) *worker {
	w := sl.drop()
	if w != nil && sl.phase != slotRetired {
		sl.to(slotEmpty, why)
	}
	return w
}

// drop moves the slot's worker to the exiting list, leaving the phase to
// the caller. It returns the worker, or nil.
func (sl *slot) drop() *worker {
	w := sl.cur
	if w != nil {
		sl.cur = nil
		sl.exiting = append(sl.exiting, w)
	}
	return w
}

// reclaim takes back, as the slot's worker, the one it still has (queued
// for retirement) or the one it retires that was not signalled yet, and
// returns it; nil if there is none.
func (sl *slot) reclaim() *worker {
	if sl.cur != nil {
		return sl.cur
	}
	for i, w := range sl.exiting {
		if w.cancelRetire() {
			sl.exiting = append(sl.exiting[:i:i], sl.exiting[i+1:]...)
			sl.cur = w
			sl.to(sl.curPhase(), "its worker, not yet stopped, serves on")
			return w
		}
	}
	return nil
}

// forget removes a worker whose tree is gone.
func (sl *slot) forget(w *worker) {
	if sl.cur == w {
		sl.detach("its worker is gone")
	}
	for i, x := range sl.exiting {
		if x == w {
			sl.exiting = append(sl.exiting[:i:i], sl.exiting[i+1:]...)
			sl.gen.workers--
			return
		}
	}
}

// snapshot describes the slot's processes, and its backoff if it waits.
func (sl *slot) snapshot(out []WorkerStatus, live bool) []WorkerStatus {
	snap := (*worker).snapshot
	if live {
		snap = (*worker).snapshotLive
	}
	for _, w := range sl.exiting {
		out = append(out, snap(w, sl.restarts))
	}
	if sl.next != nil {
		out = append(out, snap(sl.next, sl.restarts))
	}
	switch {
	case sl.cur != nil:
		out = append(out, snap(sl.cur, sl.restarts))
	case sl.phase == slotBackoff:
		out = append(out, WorkerStatus{Slot: sl.index, Generation: sl.gen.num, State: Backoff, Since: sl.wake, Restarts: sl.restarts})
	}
	if sl.lastExit != "" && len(out) > 0 && out[len(out)-1].Slot == sl.index {
		out[len(out)-1].LastExit = sl.lastExit
		out[len(out)-1].LastStderr = sl.lastStderr
		out[len(out)-1].LastExitKind = sl.lastKind
	}
	return out
}
