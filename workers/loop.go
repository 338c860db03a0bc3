package workers

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
)

// env is the supervision loop's seam to time and to everything that
// blocks, as tableflip keeps the OS behind its env. The loop itself never
// sleeps, never waits and never reads a clock but env's: real time and
// goroutines in production (realEnv), a seeded simulated clock on one
// goroutine under the simulator (sim_test.go), which is what makes every
// schedule replay exactly from its seed.
type env interface {
	// now is the loop's clock.
	now() time.Time
	// after runs fn on the loop once d has passed, unless the returned
	// stop (called on the loop) comes first.
	after(d time.Duration, fn func()) (stop func())
	// async runs work off the loop, then done on it. work must not touch
	// the loop's state; done may.
	async(work, done func())
	// notifySocket opens a worker's notify socket at path (nil under the
	// simulator, whose processes report to the loop directly).
	notifySocket(path string) (*systemd.NotifySocket, error)
	// watch delivers w's notify datagrams and then its main process's
	// exit to the loop, in that order.
	watch(w *worker)
}

// steerGroup is what the supervisor needs of a steered group of sockets
// (steer.Group); the simulator has its own.
type steerGroup interface {
	Fd(bank, slot int) int
	Steer(active []steer.Target) error
	Grow(slots int) error
	QueueLen(bank, slot int) (int, error)
	Held(bank, slot int) (int, error)
	Foreign() (int, error)
	WaitDrained(ctx context.Context, bank, slot int, since time.Time, quiet time.Duration) error
	Spec() upgrade.Spec
	Mode() steer.Mode
	Mechanism() steer.Mechanism
	Selection() string
}

// realEnv is production's env: the wall clock, timers and goroutines
// that post back to the loop.
type realEnv struct{ s *Supervisor }

func (realEnv) now() time.Time { return time.Now() }

func (e realEnv) after(d time.Duration, fn func()) func() {
	stopped := false // the loop's: a timer that fired but was stopped before its post ran does nothing
	t := time.AfterFunc(d, func() {
		e.s.post(func() {
			if !stopped {
				fn()
			}
		})
	})
	return func() {
		stopped = true
		t.Stop()
	}
}

func (e realEnv) async(work, done func()) {
	go func() {
		work()
		e.s.post(done)
	}()
}

func (realEnv) notifySocket(path string) (*systemd.NotifySocket, error) {
	return systemd.ListenNotify(path)
}

func (e realEnv) watch(w *worker) {
	go func() {
		datagrams := w.notify.Datagrams()
		for {
			select {
			case d, ok := <-datagrams:
				if !ok {
					datagrams = nil
					continue
				}
				e.s.post(func() { w.onDatagram(d) })
			case x := <-w.proc.exited():
				// What it wrote to stderr before it died is in the
				// pipe: its last lines are kept before the exit is
				// judged (the reload it fails reports them).
				w.waitStderr()
				// Whatever the worker (or a helper it ran) sent before
				// it died is still queued: it reaches the loop before
				// the exit is judged.
				w.notify.Drain()
				if datagrams != nil {
					for d := range datagrams {
						e.s.post(func() { w.onDatagram(d) })
					}
				}
				e.s.post(func() { w.onExit(x) })
				return
			}
		}
	}()
}

// timer is one of the loop's timers: set replaces it, clear drops it.
type timer struct{ stop func() }

func (t *timer) set(e env, d time.Duration, fn func()) {
	t.clear()
	t.stop = e.after(d, func() {
		t.stop = nil
		fn()
	})
}

func (t *timer) clear() {
	if t.stop != nil {
		t.stop()
		t.stop = nil
	}
}

// Every state machine of the supervisor (a worker, a slot, a generation, a
// reload, the master) moves only through a table of allowed transitions:
// a move the table does not hold is refused, logged at error level and
// counted (Status.Counters.Refused), so the simulator fails on it.
type transitions[S comparable] map[S][]S

func (t transitions[S]) allows(from, to S) bool {
	for _, x := range t[from] {
		if x == to {
			return true
		}
	}
	return false
}

// refuse records a transition a state machine does not allow.
func (s *Supervisor) refuse(machine string, from, to any, why string) {
	s.refused++
	s.lim.Log(s.log, hclog.Error, "refused state transition", "machine", machine, "from", fmt.Sprint(from), "to", fmt.Sprint(to), "why", why)
	if s.onRefused != nil {
		s.onRefused(fmt.Sprintf("%s: %v → %v (%s)", machine, from, to, why))
	}
}
