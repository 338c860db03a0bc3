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
	killed bool   // from outside, after ready
	as     string // the kind it counts as, if not one of the above
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

// slot is one position (HANDOFF_WORKER) in a generation. Its state is the
// supervisor goroutine's.
type slot struct {
	gen   *generation
	index int
	bank  int // which of the slot's two steered sockets its workers get

	cur      *worker   // the worker the slot runs, until it exits or is stopped
	next     *worker   // its replacement (memory recycling), until ready
	curReady bool      // cur is ready, and counted in gen.ready
	exiting  []*worker // exited or being stopped, tree not gone yet
	restarts int
	lastExit string    // how its last worker that was not stopped on purpose ended
	failures int       // consecutive: the backoff exponent
	retired  bool      // the slot runs no more workers
	passed   bool      // rolling: the slot's new worker passed probation and serves
	wake     time.Time // a restart is scheduled then (zero: none)
	timer    timer     // the restart after a backoff
}

// ready reports whether the slot's worker is ready.
func (sl *slot) ready() bool { return sl.curReady }

// setRetired marks the slot as running no more workers, or again.
func (sl *slot) setRetired(r bool) {
	if sl.retired == r {
		return
	}
	sl.retired = r
	sl.passed = false
	if r {
		sl.gen.active--
	} else {
		sl.gen.active++
	}
}

// setCur makes w the slot's worker.
func (sl *slot) setCur(w *worker) {
	sl.cur = w
	sl.gen.workers++
}

// markReady records that the slot's worker became ready.
func (sl *slot) markReady() {
	if !sl.curReady {
		sl.curReady = true
		sl.gen.ready++
	}
}

// live reports whether a process of the slot is left.
func (sl *slot) live() bool { return sl.cur != nil || sl.next != nil || len(sl.exiting) > 0 }

// cancelRestart forgets a scheduled restart.
func (sl *slot) cancelRestart() {
	sl.timer.clear()
	sl.wake = time.Time{}
}

// detach moves the slot's worker to the exiting list: what it does from
// now on is not judged. It returns the worker, or nil.
func (sl *slot) detach() *worker {
	w := sl.cur
	if w != nil {
		sl.cur = nil
		sl.exiting = append(sl.exiting, w)
		if sl.curReady {
			sl.curReady = false
			sl.gen.ready--
		}
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
			if w.state == Ready {
				sl.markReady()
			}
			return w
		}
	}
	return nil
}

// forget removes a worker whose tree is gone.
func (sl *slot) forget(w *worker) {
	if sl.cur == w {
		sl.detach()
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
	case !sl.wake.IsZero():
		out = append(out, WorkerStatus{Slot: sl.index, Generation: sl.gen.num, State: Backoff, Since: sl.wake, Restarts: sl.restarts})
	}
	if sl.lastExit != "" && len(out) > 0 && out[len(out)-1].Slot == sl.index {
		out[len(out)-1].LastExit = sl.lastExit
	}
	return out
}
