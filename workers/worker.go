package workers

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/lograte"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
)

// State is where a worker is in its life. Every change goes through
// worker.transition, on the supervision loop, and workerMoves says which
// are allowed.
type State string

// A worker moves starting → ready → draining → exited → gone; it may
// skip ready (it died or was stopped first) or draining (it died on its
// own). Gone (no process of its tree is left) is never shown: the
// supervisor forgets the worker then.
const (
	Starting State = "starting"
	Ready    State = "ready"
	Draining State = "draining"
	Exited   State = "exited"
	Gone     State = "gone"
	// Backoff is not a worker state but a slot's: its last worker
	// failed and the next one waits before starting.
	Backoff State = "backoff"
)

// leftoverGrace is how long what remains of a worker's tree after its
// main process exited on its own may take to stop before it is killed.
const leftoverGrace = 2 * time.Second

// killWait bounds the wait for a killed tree to disappear (a process in
// uninterruptible sleep may take a while, or forever).
const killWait = 5 * time.Second

// workerOpts are the parts of Config a worker needs.
type workerOpts struct {
	readyDelay   time.Duration
	readyTimeout time.Duration
	drainTimeout time.Duration
	stopSignal   syscall.Signal
	watchdog     time.Duration
	health       *Health
}

// workerMoves are a worker's allowed transitions.
var workerMoves = transitions[State]{
	Starting: {Ready, Draining, Exited},
	Ready:    {Draining, Exited},
	Draining: {Exited},
	Exited:   {Gone},
}

// workerEvents is how a worker reports to the supervisor: each call
// records a fact, handled once the worker's own handler has returned.
type workerEvents struct {
	ready  func(*worker)
	exited func(*worker)
	gone   func(*worker)
}

// worker is one process of a generation, from fork until no process of
// its tree is left. Its state is the supervision loop's: the loop calls
// its handlers (onDatagram, onExit, its timers, stop, retire, kill), and
// it reports to the supervisor through ev. It holds no lock.
type worker struct {
	s       *Supervisor
	slot    int
	gen     int
	bank    int
	proc    process
	notify  *systemd.NotifySocket // nil under the simulator
	log     hclog.Logger
	started time.Time
	opts    workerOpts
	ev      workerEvents

	drains      []drainTarget // its steered sockets
	prober      *prober       // if set, readiness is a probe's, not READY=1's
	unroutedAt  time.Time     // when it stopped getting new connections
	overSamples int           // memory samples in a row above the limit
	outDone     chan struct{} // closed once its output is forwarded to the end (nil: inherited)
	streams     [2]*os.File   // the read ends of its output pipes
	stderrDone  chan struct{} // closed once its stderr is forwarded to the end (nil: inherited)
	tail        *tail         // the last lines of its stderr (nil: inherited)

	state    State
	readyAt  time.Time
	exitedAt time.Time
	status   string // last STATUS= text
	exit     exitInfo
	failure  string  // why it never became ready, if it did not
	rss      int64   // last sample: resident memory of the tree, bytes
	cpu      float64 // last sample: CPU time of the tree, seconds

	// What the loop has asked of it, and its timers.
	ctx           context.Context // ends its async work (probe, drain wait) when its main process exits
	abort         context.CancelFunc
	retiring      bool      // retire was asked: a drain wait or the stop signal follows
	retireSeq     int       // a drain wait that ends after a cancelRetire does nothing
	killed        bool      // kill was asked
	drainDeadline time.Time // the stop signal was sent: SIGKILL is due then
	probing       bool
	lastProbe     error

	// Liveness (liveness.go).
	away          string   // why it gets no new connections, if it does not
	awayKind      awayKind // which rule put it away
	hung          string   // why it is being replaced though ready
	hungKind      string   // and the kind of restart that counts it
	stallSince    time.Time
	lastQueue     int
	health        *prober
	healthFails   int
	watchdogTimer timer
	healthTimer   timer
	readyTimer    timer
	delayTimer    timer
	probeTimer    timer
	drainTimer    timer
	treeTimer     timer
	treeDeadline  time.Time // cleaning up: when the current wait for the tree ends
	treeDone      func(empty bool)
	treeKilled    bool // cleaning up: what was left got SIGKILL

	garbage *lograte.Limiter // the log line about dropped datagrams: one a second
}

// begin arms the worker's timers and starts watching its process: the
// loop calls it once, right after the fork.
func (w *worker) begin() {
	w.ctx, w.abort = context.WithCancel(context.Background())
	w.readyTimer.set(w.s.env, w.opts.readyTimeout, w.onReadyTimeout)
	if w.opts.readyDelay > 0 {
		w.delayTimer.set(w.s.env, w.opts.readyDelay, func() {
			if w.state == Starting {
				w.transition(Ready, fmt.Sprintf("alive after %s", w.opts.readyDelay))
			}
		})
	}
	if w.prober != nil {
		w.probeTimer.set(w.s.env, probeEvery, w.probe)
	}
	w.s.env.watch(w)
}

func (w *worker) onReadyTimeout() {
	if w.state != Starting {
		return
	}
	why := fmt.Sprintf("not ready within %s", w.opts.readyTimeout)
	if w.lastProbe != nil {
		why += fmt.Sprintf(" (last probe: %v)", w.lastProbe)
	}
	w.failure = why
	w.log.Error("worker not ready in time, killing it", "ready_timeout", w.opts.readyTimeout.String())
	w.signal(unix.SIGKILL)
}

// probe checks a starting worker through its own socket, every
// probeEvery until it answers.
func (w *worker) probe() {
	if w.probing || w.state != Starting {
		return
	}
	w.probing = true
	var err error
	ctx := w.ctx
	w.s.env.async(func() { err = w.prober.probe(ctx) }, func() {
		w.probing = false
		w.lastProbe = err
		if w.state != Starting {
			return
		}
		if err == nil {
			w.transition(Ready, w.prober.describe())
			return
		}
		w.probeTimer.set(w.s.env, probeEvery, w.probe)
	})
}

// onDatagram handles one datagram from the worker's notify socket.
func (w *worker) onDatagram(d systemd.Datagram) {
	if d.Err == nil && d.PID != 0 && !w.proc.owns(d.PID) {
		// Its socket's name is no secret (/proc/net/unix, its
		// environment): the kernel's word on the sender decides.
		d.Err = fmt.Errorf("sent by pid %d, which is not of the worker's process tree", d.PID)
	}
	if d.Err != nil {
		w.garbage.Log(w.log, hclog.Warn, "dropped notify datagram", "reason", d.Err)
		return
	}
	m := d.Msg
	if m.HasStatus {
		w.status = m.Status
		w.s.dirty = true
	}
	if m.Stopping {
		w.log.Debug("worker notified STOPPING=1")
	}
	if m.Ready && w.state == Starting && w.prober == nil {
		w.transition(Ready, "READY=1")
	}
	switch {
	case m.WatchdogTrigger && w.state == Ready:
		w.s.replaceHung(w, "watchdog", "WATCHDOG=trigger")
	case m.Watchdog:
		w.armWatchdog()
	}
}

// stop asks the worker to drain: the stop signal to its tree, then
// SIGKILL after the drain timeout. Nothing happens to a worker already
// draining or exited.
func (w *worker) stop() {
	w.drain(fmt.Sprintf("sent %s", unix.SignalName(w.opts.stopSignal)))
}

func (w *worker) drain(how string) {
	if w.state != Starting && w.state != Ready {
		return
	}
	w.retiring = true
	w.transition(Draining, how)
	w.signal(w.opts.stopSignal)
	w.drainDeadline = w.s.env.now().Add(w.opts.drainTimeout)
	w.drainTimer.set(w.s.env, w.opts.drainTimeout, func() {
		w.log.Warn("worker did not exit in time, killing it", "drain_timeout", w.opts.drainTimeout.String())
		w.signal(unix.SIGKILL)
	})
}

// retire stops the worker once its steered sockets, steered away from
// since (zero: never in use), have had empty queues for steerQuiet; at
// once if it has none.
func (w *worker) retire(since time.Time) {
	if w.retiring || w.state != Starting && w.state != Ready {
		return
	}
	w.retiring = true
	sig := unix.SignalName(w.opts.stopSignal)
	if len(w.drains) == 0 || since.IsZero() {
		w.drain("sent " + sig)
		return
	}
	// Steered away already: stop it once its queues have been empty for
	// a quiet period, so it holds no connection it accepted but has not
	// read.
	w.s.lim.Log(w.log, hclog.Debug, "worker retiring: waiting until its sockets' queues are empty")
	seq := w.retireSeq
	var err error
	ctx, drains, timeout := w.ctx, w.drains, w.opts.drainTimeout
	w.s.env.async(func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err = waitDrained(ctx, drains, since)
	}, func() {
		if w.retireSeq != seq {
			return
		}
		how := fmt.Sprintf("queues empty for %s; sent %s", steerQuiet, sig)
		if err != nil {
			how = fmt.Sprintf("queues not empty after %s (%v); sent %s", timeout, err, sig)
		}
		w.drain(how)
	})
}

// cancelRetire takes back a retire whose stop signal was not sent yet,
// and reports whether it could.
func (w *worker) cancelRetire() bool {
	if !w.retiring || w.killed || w.state != Ready && w.state != Starting {
		return false
	}
	w.retiring = false
	w.retireSeq++
	return true
}

// kill has the worker's tree killed at once: its main process, or what
// is left of the tree if that has exited.
func (w *worker) kill() {
	if w.killed || w.state == Gone {
		return
	}
	w.killed = true
	if w.state == Exited {
		if w.treeDone != nil && !w.treeKilled {
			w.treeDeadline = w.s.env.now() // end the grace period now
			w.checkTree()
		}
		return
	}
	w.log.Warn("killing worker")
	w.signal(unix.SIGKILL)
}

// onExit: the worker's main process ended (its datagrams were handled
// first). What is left of its tree (a helper it started, a child it
// forked) gets the stop signal, then SIGKILL after a grace period (what
// remains of the drain timeout if the worker was being stopped); then
// the worker is gone.
func (w *worker) onExit(e exitInfo) {
	if w.state == Exited || w.state == Gone {
		w.s.refuse("worker", w.state, Exited, "a second exit")
		return
	}
	w.exit, w.exitedAt = e, w.s.env.now()
	for _, t := range []*timer{&w.readyTimer, &w.delayTimer, &w.probeTimer, &w.drainTimer, &w.watchdogTimer, &w.healthTimer} {
		t.clear()
	}
	w.abort()
	w.transition(Exited, e.String())
	if w.proc.treeEmpty() {
		w.finish()
		return
	}
	grace := min(leftoverGrace, w.opts.drainTimeout)
	if !w.drainDeadline.IsZero() {
		grace = max(w.drainDeadline.Sub(w.s.env.now()), 0)
	} else {
		w.s.lim.Log(w.log, hclog.Warn, "worker's main process exited; stopping the rest of its process tree", "grace", grace.String())
		w.signal(w.opts.stopSignal)
	}
	if w.killed {
		grace = 0
	}
	w.waitTree(grace, func(empty bool) {
		if empty {
			w.finish()
			return
		}
		w.s.lim.Log(w.log, hclog.Warn, "killing what is left of the worker's process tree")
		w.treeKilled = true
		w.signal(unix.SIGKILL)
		w.waitTree(killWait, func(empty bool) {
			if !empty {
				w.s.lim.Log(w.log, hclog.Error, "processes of the worker's tree survive SIGKILL; giving up on them")
			}
			w.finish()
		})
	})
}

// treePoll is how often a tree that must empty is checked.
const treePoll = 10 * time.Millisecond

// waitTree calls done once the tree is empty, or d has passed.
func (w *worker) waitTree(d time.Duration, done func(empty bool)) {
	w.treeDeadline, w.treeDone = w.s.env.now().Add(d), done
	w.checkTree()
}

func (w *worker) checkTree() {
	empty := w.proc.treeEmpty()
	now := w.s.env.now()
	if !empty && now.Before(w.treeDeadline) {
		w.treeTimer.set(w.s.env, min(treePoll, w.treeDeadline.Sub(now)), w.checkTree)
		return
	}
	w.treeTimer.clear()
	done := w.treeDone
	w.treeDone, w.treeDeadline = nil, time.Time{}
	done(empty)
}

// finish releases the process and, once its output is forwarded to the
// end, reports the worker gone.
func (w *worker) finish() {
	w.proc.release()
	if w.outDone == nil {
		w.transition(Gone, "no process of its tree is left")
		return
	}
	w.s.env.async(w.flushOutput, func() { w.transition(Gone, "no process of its tree is left") })
}

func (w *worker) signal(sig syscall.Signal) {
	if err := w.proc.signal(sig); err != nil {
		w.s.lim.Log(w.log, hclog.Warn, "cannot signal worker", "signal", unix.SignalName(sig), "error", err)
	}
}

// transition moves the worker to state to and logs why; a move
// workerMoves does not allow is refused.
func (w *worker) transition(to State, why string) {
	from := w.state
	if !workerMoves.allows(from, to) {
		w.s.refuse("worker", from, to, why)
		return
	}
	w.state = to
	switch to {
	case Ready:
		w.readyAt = w.s.env.now()
		w.s.lim.Log(w.log, hclog.Info, "worker ready", "after", w.readyAt.Sub(w.started).Round(time.Millisecond).String(), "how", why)
		w.armWatchdog()
		w.scheduleHealth()
		w.s.fact(func() { w.ev.ready(w) })
	case Draining:
		w.watchdogTimer.clear()
		w.healthTimer.clear()
		w.s.lim.Log(w.log, hclog.Info, "worker draining", "how", why)
		w.s.dirty = true
	case Exited:
		lvl := hclog.Info
		if from != Draining {
			lvl = hclog.Warn
		}
		w.s.lim.Log(w.log, lvl, "worker exited", "status", why, "was", string(from))
		w.s.fact(func() { w.ev.exited(w) })
	case Gone:
		w.s.fact(func() { w.ev.gone(w) })
	}
}

// outputLinger bounds the wait for the end of a worker's output once its
// tree is gone: a process outside the tree (one that escaped its process
// group, without cgroups) may hold the pipe open.
const outputLinger = time.Second

// flushOutput waits until the worker's output has been forwarded to its
// end, or outputLinger, then closes the pipes.
func (w *worker) flushOutput() {
	if w.outDone == nil {
		return
	}
	t := time.NewTimer(outputLinger)
	defer t.Stop()
	select {
	case <-w.outDone:
	case <-t.C:
		closeFiles(w.streams[:])
	}
}

// waitDrained waits until every socket in ds has had an empty queue for
// steerQuiet, counting from since.
func waitDrained(ctx context.Context, ds []drainTarget, since time.Time) error {
	for _, d := range ds {
		if err := d.group.WaitDrained(ctx, d.bank, d.slot, since, steerQuiet); err != nil {
			return err
		}
	}
	return nil
}

// snapshot describes the worker for Status.
func (w *worker) snapshot(restarts int) WorkerStatus {
	return WorkerStatus{
		Slot:       w.slot,
		Bank:       w.bank,
		PID:        w.proc.pid(),
		Generation: w.gen,
		State:      w.state,
		Since:      w.started,
		Restarts:   restarts,
		Status:     w.status,
		RSS:        w.rss,
		CPU:        w.cpu,
		Away:       w.away,
		AwayFor:    w.awayFor(),
	}
}

// snapshotLive samples the worker's tree and its sockets' queues first.
func (w *worker) snapshotLive(restarts int) WorkerStatus {
	w.rss, w.cpu = w.s.usage(w.proc)
	st := w.snapshot(restarts)
	st.Queue, st.Held = queues(w.drains)
	return st
}
