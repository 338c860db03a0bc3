package workers

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/systemd"
)

// State is where a worker is in its life. Every transition happens in
// worker.run, through worker.transition.
type State string

// A worker moves starting → ready → draining → exited; it may skip ready
// (it died or was stopped first) or draining (it died on its own).
const (
	Starting State = "starting"
	Ready    State = "ready"
	Draining State = "draining"
	Exited   State = "exited"
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
}

// workerEvents is how a worker reports to the supervisor's goroutine.
type workerEvents struct {
	post   func(func()) // runs a function on the supervisor's goroutine
	ready  func(*worker)
	exited func(*worker)
	gone   func(*worker)
	change func()
}

// worker is one process of a generation, from fork until no process of
// its tree is left.
type worker struct {
	slot, gen int
	bank      int
	proc      process
	notify    *systemd.NotifySocket
	log       hclog.Logger
	started   time.Time
	opts      workerOpts
	ev        workerEvents
	lim       *logLimiter

	drains      []drainTarget // its steered sockets
	prober      *prober       // if set, readiness is a probe's, not READY=1's
	unroutedAt  time.Time     // supervisor's: when it stopped getting new connections
	overSamples int           // supervisor's: memory samples in a row above the limit
	usage       func(process) (int64, float64)
	retirec     chan struct{} // closed to retire it: empty its queues, then stop
	retireOnce  sync.Once
	retireSince time.Time     // set before retirec is closed
	outDone     chan struct{} // closed once its output is forwarded to the end (nil: inherited)
	streams     [2]*os.File   // the read ends of its output pipes

	stopc    chan struct{} // closed to ask the worker to drain
	stopOnce sync.Once
	killc    chan struct{} // closed to have the worker's tree killed
	killOnce sync.Once

	mu       sync.Mutex
	state    State
	readyAt  time.Time
	exitedAt time.Time
	status   string // last STATUS= text
	exit     exitInfo
	failure  string // why it never became ready, if it did not
	gone     bool
	rss      int64   // last sample: resident memory of the tree, bytes
	cpu      float64 // last sample: CPU time of the tree, seconds

	garbage dropLog
}

// run drives the worker through its states until its tree is gone. It is
// the only place a worker's state changes, and the only goroutine that
// signals its processes, so no signal can follow the release of its
// pidfd.
func (w *worker) run() {
	readyTimer := time.NewTimer(w.opts.readyTimeout)
	defer readyTimer.Stop()
	var delay, drain <-chan time.Time
	if w.opts.readyDelay > 0 {
		t := time.NewTimer(w.opts.readyDelay)
		defer t.Stop()
		delay = t.C
	}
	datagrams := w.notify.Datagrams()
	stopc, killc, retirec := w.stopc, w.killc, w.retirec
	var probeTick <-chan time.Time
	var probed chan error
	var lastProbe error
	if w.prober != nil {
		t := time.NewTicker(probeEvery)
		defer t.Stop()
		probeTick = t.C
		probed = make(chan error, 1)
	}
	probing := false
	var drainDeadline time.Time
	var drained <-chan error
	abort := make(chan struct{}) // closed to end a wait for empty queues
	defer close(abort)
	stop := func(how string) {
		stopc, retirec, drained = nil, nil, nil
		w.transition(Draining, how)
		w.signal(w.opts.stopSignal)
		drainDeadline = time.Now().Add(w.opts.drainTimeout)
		t := time.NewTimer(w.opts.drainTimeout)
		drain = t.C
	}
	for {
		select {
		case d, ok := <-datagrams:
			if !ok {
				datagrams = nil
				continue
			}
			w.handle(d)

		case <-delay:
			if w.State() == Starting {
				w.transition(Ready, fmt.Sprintf("alive after %s", w.opts.readyDelay))
			}

		case <-probeTick:
			if probing || w.State() != Starting {
				continue
			}
			probing = true
			go func() {
				ctx, cancel := abortable(abort, 0)
				defer cancel()
				probed <- w.prober.probe(ctx)
			}()

		case err := <-probed:
			probing = false
			lastProbe = err
			if err == nil && w.State() == Starting {
				probeTick = nil
				w.transition(Ready, w.prober.describe())
			}

		case <-readyTimer.C:
			if w.State() == Starting {
				why := fmt.Sprintf("not ready within %s", w.opts.readyTimeout)
				if lastProbe != nil {
					why += fmt.Sprintf(" (last probe: %v)", lastProbe)
				}
				w.setFailure(why)
				w.log.Error("worker not ready in time, killing it", "ready_timeout", w.opts.readyTimeout.String())
				w.signal(unix.SIGKILL)
			}

		case <-stopc:
			stop(fmt.Sprintf("sent %s", unix.SignalName(w.opts.stopSignal)))

		case <-retirec:
			retirec = nil
			if len(w.drains) == 0 || w.retireSince.IsZero() {
				stop(fmt.Sprintf("sent %s", unix.SignalName(w.opts.stopSignal)))
				continue
			}
			// Steered away already: stop it once its queues have been
			// empty for a quiet period, so it holds no connection it
			// accepted but has not read.
			w.lim.log(w.log, hclog.Debug, "worker retiring: waiting until its sockets' queues are empty")
			c := make(chan error, 1)
			drained = c
			go func() {
				ctx, cancel := abortable(abort, w.opts.drainTimeout)
				defer cancel()
				c <- waitDrained(ctx, w.drains, w.retireSince)
			}()

		case err := <-drained:
			how := fmt.Sprintf("queues empty for %s; sent %s", steerQuiet, unix.SignalName(w.opts.stopSignal))
			if err != nil {
				how = fmt.Sprintf("queues not empty after %s (%v); sent %s", w.opts.drainTimeout, err, unix.SignalName(w.opts.stopSignal))
			}
			stop(how)

		case <-drain:
			drain = nil
			w.log.Warn("worker did not exit in time, killing it", "drain_timeout", w.opts.drainTimeout.String())
			w.signal(unix.SIGKILL)

		case <-killc:
			killc = nil
			w.log.Warn("killing worker")
			w.signal(unix.SIGKILL)

		case e := <-w.proc.exited():
			// Whatever the worker (or a helper it ran) sent before it
			// died is still queued: read it before judging the exit.
			w.notify.Drain()
			if datagrams != nil {
				for d := range datagrams {
					w.handle(d)
				}
			}
			w.mu.Lock()
			w.exit, w.exitedAt = e, time.Now()
			w.mu.Unlock()
			w.transition(Exited, e.String())
			w.cleanUp(drainDeadline, killc)
			return
		}
	}
}

// cleanUp stops what is left of the worker's tree once its main process
// has exited (a helper it started, a child it forked): the stop signal,
// then SIGKILL after a grace period (what remains of the drain timeout if
// the worker was being stopped), then it reports the worker gone.
func (w *worker) cleanUp(drainDeadline time.Time, killc <-chan struct{}) {
	defer func() {
		w.proc.release()
		w.flushOutput()
		w.mu.Lock()
		w.gone = true
		w.mu.Unlock()
		w.ev.post(func() { w.ev.gone(w) })
	}()
	if w.proc.treeEmpty() {
		return
	}
	grace := min(leftoverGrace, w.opts.drainTimeout)
	if !drainDeadline.IsZero() {
		grace = max(time.Until(drainDeadline), 0)
	} else {
		w.lim.log(w.log, hclog.Warn, "worker's main process exited; stopping the rest of its process tree", "grace", grace.String())
		w.signal(w.opts.stopSignal)
	}
	if pollTree(w.proc, grace, killc) {
		return
	}
	w.lim.log(w.log, hclog.Warn, "killing what is left of the worker's process tree")
	w.signal(unix.SIGKILL)
	if !pollTree(w.proc, killWait, nil) {
		w.lim.log(w.log, hclog.Error, "processes of the worker's tree survive SIGKILL; giving up on them")
	}
}

func (w *worker) signal(sig syscall.Signal) {
	if err := w.proc.signal(sig); err != nil {
		w.lim.log(w.log, hclog.Warn, "cannot signal worker", "signal", unix.SignalName(sig), "error", err)
	}
}

// transition moves the worker to state to and logs why.
func (w *worker) transition(to State, why string) {
	w.mu.Lock()
	from := w.state
	w.state = to
	if to == Ready {
		w.readyAt = time.Now()
	}
	w.mu.Unlock()
	switch to {
	case Ready:
		w.lim.log(w.log, hclog.Info, "worker ready", "after", time.Since(w.started).Round(time.Millisecond).String(), "how", why)
		w.ev.post(func() { w.ev.ready(w) })
	case Draining:
		w.lim.log(w.log, hclog.Info, "worker draining", "how", why)
		w.ev.post(w.ev.change)
	case Exited:
		lvl := hclog.Info
		if from != Draining {
			lvl = hclog.Warn
		}
		w.lim.log(w.log, lvl, "worker exited", "status", why, "was", string(from))
		w.ev.post(func() { w.ev.exited(w) })
	}
}

func (w *worker) handle(d systemd.Datagram) {
	if d.Err != nil {
		w.garbage.log(w.log, d.Err)
		return
	}
	m := d.Msg
	if m.HasStatus {
		w.mu.Lock()
		w.status = m.Status
		w.mu.Unlock()
		w.ev.post(w.ev.change)
	}
	if m.Stopping {
		w.log.Debug("worker notified STOPPING=1")
	}
	if m.Ready && w.State() == Starting && w.prober == nil {
		w.transition(Ready, "READY=1")
	}
}

// State returns the worker's current state.
func (w *worker) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

func (w *worker) setFailure(s string) {
	w.mu.Lock()
	w.failure = s
	w.mu.Unlock()
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

// stop asks the worker to drain: the stop signal to its tree, then
// SIGKILL after the drain timeout. It does not wait.
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.stopc) }) }

// retire stops the worker once its steered sockets, steered away from
// since (zero: never in use), have had empty queues for steerQuiet; at
// once if it has none. It does not wait.
func (w *worker) retire(since time.Time) {
	w.retireOnce.Do(func() {
		w.retireSince = since
		close(w.retirec)
	})
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

// kill has the worker's tree killed at once. It does not wait.
func (w *worker) kill() { w.killOnce.Do(func() { close(w.killc) }) }

// snapshot describes the worker for Status.
func (w *worker) snapshot(restarts int) WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
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
	}
}

// setUsage records a sample of the tree's memory and CPU.
func (w *worker) setUsage(rss int64, cpu float64) {
	w.mu.Lock()
	w.rss, w.cpu = rss, cpu
	w.mu.Unlock()
}

// snapshotLive samples the worker's tree and its sockets' queues first.
func (w *worker) snapshotLive(restarts int) WorkerStatus {
	w.setUsage(w.usage(w.proc))
	st := w.snapshot(restarts)
	st.Queue = queues(w.drains)
	return st
}

// dropLog rate-limits the log line about dropped notify datagrams to one a
// second per worker, counting what it did not log.
type dropLog struct {
	last       time.Time
	suppressed int
}

func (d *dropLog) log(l hclog.Logger, err error) {
	now := time.Now()
	if now.Sub(d.last) < time.Second {
		d.suppressed++
		return
	}
	l.Warn("dropped notify datagram", "reason", err, "suppressed_since_last", d.suppressed)
	d.last, d.suppressed = now, 0
}

// readyTime is when the worker became ready (zero if it has not).
func (w *worker) readyTime() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readyAt
}

// abortable is a context that ends when abort is closed (the worker's run
// is over), after timeout if it is not 0, or when cancelled.
func abortable(abort <-chan struct{}, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	ctx, cancelAbort := context.WithCancel(ctx)
	go func() {
		select {
		case <-abort:
			cancelAbort()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancelAbort(); cancel() }
}
