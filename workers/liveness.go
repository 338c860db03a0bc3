package workers

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Liveness: a worker that is ready may stop serving without exiting (a
// deadlock, a stuck call, SIGSTOP, a long pause, a handler looping on the
// CPU). Three signals say so, and each first steers new connections away
// from the worker (away), which costs nothing if it was wrong, then
// replaces it if it does not recover:
//
//   - its accept queue: connections wait in one of its sockets and the
//     queue does not shrink for stallAfter: steered away at once; queued
//     again and not shrinking for Config.HangTimeout: killed (its tree)
//     and replaced, and the replacement takes the connections still
//     waiting in that socket. A queue that empties steers it back. Once
//     steered away a worker gets no new connections, so a queue that
//     does not shrink is one the worker does not read: a healthy worker
//     under a burst drains it and comes back.
//   - the systemd watchdog (Config.Watchdog): WATCHDOG_USEC in its
//     environment; no WATCHDOG=1 for that long after READY, or
//     WATCHDOG=trigger: steered away and replaced at once, as systemd
//     restarts a service whose watchdog fired.
//   - a health check (Config.Health) through its own socket every
//     interval: the first failure steers it away, Failures in a row
//     replace it, a success steers it back.
//
// A worker replaced for any of these counts in Counters.Restarts as
// "hung", "watchdog" or "unhealthy", is replaced at once (no backoff:
// it had served), and the reason shows in the log and in status.

// stallAfter is how long a non-empty accept queue may go without
// shrinking before its worker is steered away; livenessEvery spaces the
// samples of the queues.
const (
	stallAfter    = 100 * time.Millisecond
	livenessEvery = 50 * time.Millisecond
)

// DefaultHangTimeout is how long a steered-away worker's queue may go
// without shrinking before the worker is replaced.
const DefaultHangTimeout = 5 * time.Second

// The health check's defaults: every second, replaced after 3 failures
// in a row.
const (
	DefaultHealthInterval = time.Second
	DefaultHealthFailures = 3
)

// Health is a periodic check of every ready worker through its own
// socket of a steered TCP listener, as Probe is for readiness.
type Health struct {
	Probe
	// Interval spaces the checks of one worker.
	Interval time.Duration
	// Failures in a row replace the worker; the first steers it away.
	Failures int
}

// setAway steers new connections away from w (why non-empty) or back
// to it (why empty).
func (s *Supervisor) setAway(w *worker, why string) {
	if w.away == why {
		return
	}
	if why == "" {
		s.lim.Log(w.log, hclog.Info, "worker gets connections again", "was", w.away)
	} else {
		s.lim.Log(w.log, hclog.Warn, "steering connections away from worker", "why", why)
	}
	w.away = why
	if why == "" {
		w.awayKind = awayNone
	}
	s.steerDirty = true
	s.dirty = true
}

// replaceHung replaces a ready worker that does not serve, counted as
// kind. Steered away already, a worker whose queue does not move
// ("hung") is killed, its tree with it, and replaced at once on the same
// socket, so that its replacement answers the connections waiting there.
// One whose watchdog fired or whose health check failed may still be
// answering what it holds: it is replaced gracefully, as a worker above
// the memory limit is (a replacement on the slot's other socket, then
// the old worker's steered drain and stop signal).
func (s *Supervisor) replaceHung(w *worker, kind, why string) {
	if w.hung != "" || w.state != Ready {
		return
	}
	s.setAway(w, why)
	w.hung, w.hungKind = why, kind
	s.lim.Log(w.log, hclog.Error, "worker does not serve, replacing it", "kind", kind, "why", why)
	if kind == "hung" {
		w.kill()
		return
	}
	for _, g := range s.gens {
		for _, sl := range g.slots {
			if sl.cur == w {
				s.queue = append(s.queue, &op{recycle: &recycleOp{sl: sl, old: w, as: kind, why: why}})
				s.dirty = true
				s.nextOp()
				return
			}
		}
	}
}

// livenessWatched reports whether the supervisor samples queues: some
// listener is steered.
func (s *Supervisor) livenessWatched() bool {
	for _, l := range s.cfg.Listeners {
		if l.group() != nil {
			return true
		}
	}
	return false
}

// scheduleLiveness samples the serving workers' queues every
// livenessEvery while the master serves.
func (s *Supervisor) scheduleLiveness() {
	s.env.after(livenessEvery, func() {
		if s.phase == MasterStopping || s.phase == MasterHandedOver {
			return
		}
		s.checkQueues()
		s.scheduleLiveness()
	})
}

// checkQueues applies the queue rule to every ready worker that serves.
func (s *Supervisor) checkQueues() {
	if !s.livenessWatched() {
		return
	}
	now := s.env.now()
	for _, g := range s.gens {
		if g.phase != GenServing && g.phase != GenStarting && g.phase != GenProbation {
			continue
		}
		for _, sl := range g.slots {
			w := sl.cur
			if w == nil || w.state != Ready || w.hung != "" || len(w.drains) == 0 {
				continue
			}
			q := 0
			for _, d := range w.drains {
				if n, err := d.group.QueueLen(d.bank, d.slot); err == nil {
					q += n
				}
			}
			switch {
			case q == 0:
				w.stallSince = time.Time{}
				if w.away != "" && w.awayKind == awayQueue {
					s.setAway(w, "")
				}
			case w.stallSince.IsZero() || q < w.lastQueue:
				w.stallSince = now // progress, or the first sign of a queue
			case w.awayKind != awayQueue && now.Sub(w.stallSince) >= stallAfter:
				if w.away == "" {
					w.awayKind = awayQueue
					s.setAway(w, fmt.Sprintf("%d connections waiting, none accepted for %s", q, now.Sub(w.stallSince).Round(time.Millisecond)))
				}
			case w.awayKind == awayQueue && g.cfg.HangTimeout > 0 && now.Sub(w.stallSince) >= g.cfg.HangTimeout:
				s.replaceHung(w, "hung", fmt.Sprintf("%d connections waiting, none accepted for %s", q, now.Sub(w.stallSince).Round(time.Millisecond)))
			}
			w.lastQueue = q
		}
	}
}

// awayKind says which rule steered a worker away, so that only that rule
// steers it back.
type awayKind int

const (
	awayNone awayKind = iota
	awayQueue
	awayHealth
)

// awayFor names the rule that steered w away, for status ("" if none).
func (w *worker) awayFor() string {
	switch {
	case w.away == "":
		return ""
	case w.hungKind != "":
		return w.hungKind
	case w.awayKind == awayHealth:
		return "health"
	}
	return "queue"
}

// armWatchdog (re)starts a ready worker's watchdog.
func (w *worker) armWatchdog() {
	d := w.opts.watchdog
	if d <= 0 || w.state != Ready {
		return
	}
	w.watchdogTimer.set(w.s.env, d, func() {
		w.s.replaceHung(w, "watchdog", fmt.Sprintf("no WATCHDOG=1 for %s", d))
	})
}

// scheduleHealth checks a ready worker's health every Health.Interval.
func (w *worker) scheduleHealth() {
	h := w.opts.health
	if h == nil || w.health == nil || w.state != Ready {
		return
	}
	w.healthTimer.set(w.s.env, h.Interval, w.checkHealth)
}

func (w *worker) checkHealth() {
	h := w.opts.health
	if w.state != Ready || w.hung != "" {
		return
	}
	var err error
	ctx, p := w.ctx, w.health
	w.s.env.async(func() { err = p.probe(ctx) }, func() {
		if w.state != Ready || w.hung != "" {
			return
		}
		if err == nil {
			w.healthFails = 0
			if w.awayKind == awayHealth {
				w.s.setAway(w, "")
			}
		} else {
			w.healthFails++
			why := fmt.Sprintf("health check failed %d time(s): %v", w.healthFails, err)
			if w.healthFails >= h.Failures {
				w.s.replaceHung(w, "unhealthy", why)
				return
			}
			if w.away == "" || w.awayKind == awayHealth {
				w.awayKind = awayHealth
				w.s.setAway(w, why)
			}
		}
		w.scheduleHealth()
	})
}
