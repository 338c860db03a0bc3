package workers

import (
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/steer"
)

// Steering (see package steer): a steered listener has a socket per slot
// in each of two banks; generations alternate banks, so a new generation
// never shares a slot's socket with the old one. The supervisor tells
// the kernel which sockets get new connections: those of ready workers
// that serve. A generation on probation gets none (the old one serves
// alone until the new one has proved itself); a worker that dies is
// steered away from at once and its queue waits for its replacement; a
// worker to be retired is steered away from, and stopped only once its
// queue has been empty for steerQuiet (retire, below): it then holds no
// connection it accepted but has not read, whatever its own shutdown
// code does with those.

// steerQuiet is how long a socket steered away from must have had an
// empty accept queue before its worker is stopped. It covers handshakes
// in flight at the switch (they complete onto the socket chosen at the
// SYN, a round trip later) and the worker's read of the request on the
// last connection it accepted.
const steerQuiet = 200 * time.Millisecond

// routable reports whether new connections may go to sl's worker.
func (s *Supervisor) routable(sl *slot) bool {
	if !sl.ready() || sl.cur.away != "" && !s.allAway {
		return false
	}
	switch sl.gen.phase {
	case GenServing:
		return true
	case GenStarting:
		// A master that took over keeps its predecessor's workers
		// serving until its first generation is ready: then all at once.
		return !s.cfg.TakeOver
	case GenProbation:
		return sl.phase == slotPassed
	}
	return false
}

// resteer steers each group's new connections to the sockets of the
// routable workers of the generations that listen on it, the newest
// generation's first in each slot, where that changed since last time.
// With none routable, the kernel keeps the previous choice: connections
// queue for the workers to come (and those it still routes to count as
// routed).
func (s *Supervisor) resteer() {
	s.steerDirty = false
	if s.phase == MasterStopping || s.phase == MasterHandedOver {
		return
	}
	var groups []steerGroup
	for _, g := range s.gens {
		for _, l := range g.cfg.Listeners {
			if grp := l.group(); grp != nil && !slices.Contains(groups, grp) {
				groups = append(groups, grp)
			}
		}
	}
	routed := map[*worker]bool{}
	for _, grp := range groups {
		targets, ws := s.targetsFor(grp)
		if len(targets) == 0 {
			// Every worker is away (all busy, say): none is starved of
			// connections for that, as one shared socket would not be.
			s.allAway = true
			targets, ws = s.targetsFor(grp)
			s.allAway = false
		}
		if len(targets) == 0 {
			ws = s.routedBy[grp]
		} else if !slices.Equal(targets, s.steered[grp]) {
			if err := grp.Steer(targets); err != nil {
				s.lim.Log(s.log, hclog.Error, "cannot steer connections", "listener", grp.Spec().Name, "error", err)
			}
			s.steered[grp], s.routedBy[grp] = targets, ws
			s.log.Debug("steered connections", "listener", grp.Spec().Name, "sockets", len(targets))
		}
		for _, w := range ws {
			routed[w] = true
		}
	}
	now := s.env.now()
	for w := range s.routed {
		if !routed[w] {
			w.unroutedAt = now
		}
	}
	s.routed = routed
}

// targetsFor picks, for each slot, the newest generation listening on grp
// with a routable worker there.
func (s *Supervisor) targetsFor(grp steerGroup) ([]steer.Target, []*worker) {
	var targets []steer.Target
	var ws []*worker
	n := 0
	for _, g := range s.gens {
		n = max(n, len(g.slots))
	}
	for i := 0; i < n; i++ {
		for j := len(s.gens) - 1; j >= 0; j-- {
			g := s.gens[j]
			if i < len(g.slots) && listensOn(g, grp) && s.routable(g.slots[i]) {
				targets = append(targets, steer.Target{Slot: i, Bank: g.slots[i].cur.bank})
				ws = append(ws, g.slots[i].cur)
				break
			}
		}
	}
	return targets, ws
}

func listensOn(g *generation, grp steerGroup) bool {
	for _, l := range g.cfg.Listeners {
		if l.group() == grp {
			return true
		}
	}
	return false
}

// unrouted is when w stopped getting new connections; zero if it never
// got any (or steering is off), so there is nothing to wait for.
func (s *Supervisor) unrouted(w *worker) time.Time {
	if s.routed[w] {
		// Still routed: this is a shutdown, with nowhere else to send
		// connections; do not wait for a queue that keeps filling.
		return time.Time{}
	}
	return w.unroutedAt
}

// drainTargets are the steered sockets, among ls, of a worker in slot,
// bank.
func drainTargets(ls []Listener, slot, bank int) []drainTarget {
	var out []drainTarget
	for _, l := range ls {
		if g := l.group(); g != nil {
			out = append(out, drainTarget{group: g, name: l.Name, bank: bank, slot: slot})
		}
	}
	return out
}

// drainTarget is one steered socket of a worker.
type drainTarget struct {
	group steerGroup
	name  string
	bank  int
	slot  int
}

// queues reads the accept queues of a worker's steered sockets, and the
// connections each holds where the kernel counts them.
func queues(ds []drainTarget) (queue, held map[string]int) {
	if len(ds) == 0 {
		return nil, nil
	}
	queue = make(map[string]int, len(ds))
	for _, d := range ds {
		if n, err := d.group.QueueLen(d.bank, d.slot); err == nil {
			queue[d.name] = n
		}
		if n, err := d.group.Held(d.bank, d.slot); err == nil {
			if held == nil {
				held = map[string]int{}
			}
			held[d.name] = n
		}
	}
	return queue, held
}
