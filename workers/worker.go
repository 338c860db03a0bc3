package workers

import (
	"context"
	"fmt"
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

// worker is one process of a generation, from fork to reap.
type worker struct {
	slot, gen int
	proc      *proc
	notify    *systemd.NotifySocket
	log       hclog.Logger
	started   time.Time

	readyDelay   time.Duration
	readyTimeout time.Duration
	stopSignal   syscall.Signal

	readyc   chan struct{} // closed on becoming ready
	donec    chan struct{} // closed once reaped
	stopc    chan struct{} // closed to ask the worker to drain
	stopOnce sync.Once
	killc    chan struct{} // closed to have the worker killed
	killOnce sync.Once

	mu      sync.Mutex
	state   State
	readyAt time.Time
	status  string // last STATUS= text
	exit    exitInfo
	failure string // why it never became ready, if it did not

	garbage dropLog
	changed chan<- struct{} // poked on every transition
}

// run drives the worker through its states until it is reaped. It is the
// only place a worker's state changes, and the only goroutine that signals
// the process, so no signal can follow the release of its pidfd.
func (w *worker) run() {
	readyTimer := time.NewTimer(w.readyTimeout)
	defer readyTimer.Stop()
	var delay <-chan time.Time
	if w.readyDelay > 0 {
		t := time.NewTimer(w.readyDelay)
		defer t.Stop()
		delay = t.C
	}
	datagrams := w.notify.Datagrams()
	stopc, killc := w.stopc, w.killc
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
				w.transition(Ready, fmt.Sprintf("alive after %s", w.readyDelay))
			}

		case <-readyTimer.C:
			if w.State() == Starting {
				w.setFailure(fmt.Sprintf("not ready within %s", w.readyTimeout))
				w.log.Error("worker not ready in time, killing it", "ready_timeout", w.readyTimeout.String())
				_ = w.proc.signal(syscall.SIGKILL)
			}

		case <-stopc:
			stopc = nil
			w.transition(Draining, fmt.Sprintf("sent %s", unix.SignalName(w.stopSignal)))
			if err := w.proc.signal(w.stopSignal); err != nil {
				w.log.Warn("cannot signal worker", "error", err)
			}

		case <-killc:
			killc = nil
			w.log.Warn("worker did not exit in time, killing it")
			_ = w.proc.signal(syscall.SIGKILL)

		case e := <-w.proc.exit:
			// Whatever the worker (or a helper it ran) sent before it
			// died is still queued: read it before judging the exit.
			w.notify.Drain()
			if datagrams != nil {
				for d := range datagrams {
					w.handle(d)
				}
			}
			w.proc.release()
			w.mu.Lock()
			w.exit = e
			w.mu.Unlock()
			w.transition(Exited, e.String())
			return
		}
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
	if w.changed != nil {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	switch to {
	case Ready:
		w.log.Info("worker ready", "after", time.Since(w.started).Round(time.Millisecond).String(), "how", why)
		close(w.readyc)
	case Draining:
		w.log.Info("worker draining", "how", why)
	case Exited:
		lvl := hclog.Info
		if from != Draining {
			lvl = hclog.Warn
		}
		w.log.Log(lvl, "worker exited", "status", why, "was", string(from))
		close(w.donec)
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
	}
	if m.Stopping {
		w.log.Debug("worker notified STOPPING=1")
	}
	if m.Ready && w.State() == Starting {
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

// Stop asks the worker to drain (the stop signal) and waits for it to
// exit. When ctx is done first, the worker is killed.
func (w *worker) Stop(ctx context.Context) {
	w.stopOnce.Do(func() { close(w.stopc) })
	select {
	case <-w.donec:
		return
	case <-ctx.Done():
	}
	select {
	case <-w.donec:
		return
	default:
	}
	w.killOnce.Do(func() { close(w.killc) })
	<-w.donec
}

// outcome describes, after the worker exited, whether it failed: it died
// before becoming ready, or within minHealthy of it.
func (w *worker) outcome() (failed bool, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.readyAt.IsZero() && w.failure != "":
		return true, w.failure
	case w.readyAt.IsZero():
		return true, fmt.Sprintf("%s before ready", w.exit)
	case time.Since(w.readyAt) < minHealthy:
		return true, fmt.Sprintf("%s %s after ready", w.exit, time.Since(w.readyAt).Round(time.Millisecond))
	}
	return false, w.exit.String()
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
