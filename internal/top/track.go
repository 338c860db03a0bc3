package top

import (
	"fmt"
	"sort"
	"time"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// maxEvents is how many events the view keeps.
const maxEvents = 8

// Event is something that changed between two polls.
type Event struct {
	At   time.Time
	Text string
	// phase marks a reload's phase seen by the polls, which the
	// master's history does not record.
	phase bool
}

// Tracker keeps what only consecutive statuses tell: the CPU each worker
// used between two polls and the events.
type Tracker struct {
	prev     *workers.Status
	prevAt   time.Time
	cpu      map[int]float64 // pid → percent of one core since the last poll
	events   []Event
	progress Progress
	phase    string // the last rollover phase seen, with its generation
	safe     func(string) string
	// master is the master's own events (its history), the newest
	// maxEvents, when it sends them: they replace the ones derived here,
	// and include what happened before top started.
	master []Event
}

// NewTracker returns a Tracker that passes the master's strings through
// safe (nil: as they are).
func NewTracker(safe func(string) string) *Tracker {
	if safe == nil {
		safe = func(s string) string { return s }
	}
	return &Tracker{cpu: map[int]float64{}, safe: safe}
}

// Update takes the status polled at at.
func (t *Tracker) Update(st workers.Status, at time.Time) {
	cpu := map[int]float64{}
	if p := t.prev; p != nil {
		dt := at.Sub(t.prevAt).Seconds()
		before := map[int]float64{}
		for _, w := range p.Workers {
			before[w.PID] = w.CPU
		}
		for _, w := range st.Workers {
			if c, ok := before[w.PID]; ok && dt > 0 && w.PID > 0 && w.CPU >= c {
				cpu[w.PID] = (w.CPU - c) / dt * 100
			} else if old, ok := t.cpu[w.PID]; ok {
				cpu[w.PID] = old // not sampled again yet
			}
		}
		t.diff(*p, st, at)
	}
	t.cpu = cpu
	t.prev, t.prevAt = &st, at
	t.progress.Step(st, at) // counts the old workers when a reload is first seen
}

// diff records the events between p and st.
func (t *Tracker) diff(p, st workers.Status, at time.Time) {
	add := func(format string, args ...any) {
		t.events = append(t.events, Event{At: at, Text: fmt.Sprintf(format, args...)})
		if len(t.events) > maxEvents {
			t.events = t.events[len(t.events)-maxEvents:]
		}
	}
	if st.PID != p.PID {
		add("master upgraded: pid %d → %d (version %s)", p.PID, st.PID, t.safe(st.Version))
	}
	if r := st.Rollover; r != nil {
		key := fmt.Sprintf("%d %s", r.Generation, r.Phase)
		if key != t.phase && (p.Rollover == nil || p.Rollover.Generation != r.Generation || p.Rollover.Phase != r.Phase) {
			add("reload to generation %d: %s", r.Generation, r.Phase)
			t.events[len(t.events)-1].phase = true
		}
		t.phase = key
	}
	if r := st.LastReload; r != nil && (p.LastReload == nil || p.LastReload.Generation != r.Generation || !p.LastReload.Started.Equal(r.Started)) {
		what := "reload"
		if r.Master {
			what = "master upgrade"
		}
		if r.OK {
			add("%s to generation %d ok in %s", what, r.Generation, r.Duration.Round(time.Millisecond))
		} else {
			add("%s to generation %d rolled back: %s", what, r.Generation, t.safe(r.Error))
		}
	}
	if st.PID == p.PID {
		reasons := make([]string, 0, len(st.Counters.Restarts))
		for why := range st.Counters.Restarts {
			reasons = append(reasons, why)
		}
		sort.Strings(reasons)
		for _, why := range reasons {
			if n := st.Counters.Restarts[why] - p.Counters.Restarts[why]; n > 0 {
				add("%d worker restart(s): %s", n, t.safe(why))
			}
		}
	}
	type key struct{ gen, slot int }
	was := map[key]int{}
	for _, w := range p.Workers {
		was[key{w.Generation, w.Slot}] = w.PID
	}
	for _, w := range st.Workers {
		if old, ok := was[key{w.Generation, w.Slot}]; ok && old > 0 && w.PID > 0 && old != w.PID {
			add("slot %d: pid %d replaced by %d", w.Slot, old, w.PID)
		}
	}
}

// Events returns the last events, oldest first: the master's own when it
// sends them, with the reload phases seen by the polls, else the ones
// derived from consecutive polls.
func (t *Tracker) Events() []Event {
	if t.master == nil {
		return t.events
	}
	out := append([]Event(nil), t.master...)
	for _, e := range t.events {
		if e.phase {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out[max(0, len(out)-maxEvents):]
}

// MasterEvents takes the master's newest events from a poll (nil from a
// master that sends none).
func (t *Tracker) MasterEvents(es []history.Entry) {
	if es == nil {
		t.master = nil
		return
	}
	es = es[max(0, len(es)-maxEvents):]
	t.master = make([]Event, 0, len(es))
	for _, e := range es {
		t.master = append(t.master, Event{At: e.Time, Text: t.describe(e)})
	}
}

// describe says what a history entry records, in one line.
func (t *Tracker) describe(e history.Entry) string {
	switch e.Kind {
	case history.KindServing:
		return fmt.Sprintf("generation %d serving", e.Generation)
	case history.KindReloading:
		if e.Reason != "" {
			return fmt.Sprintf("reload to generation %d started (%s)", e.Generation, t.safe(e.Reason))
		}
		return fmt.Sprintf("reload to generation %d started", e.Generation)
	case history.KindReload, history.KindUpgrade:
		what := "reload"
		if e.Kind == history.KindUpgrade {
			what = "master upgrade"
		}
		if e.OK {
			return fmt.Sprintf("%s to generation %d ok in %s", what, e.Generation, e.Duration.Round(time.Millisecond))
		}
		return fmt.Sprintf("%s to generation %d rolled back: %s", what, e.Generation, t.safe(e.Reason))
	case history.KindRestart, history.KindKill, history.KindRecycle, history.KindHung:
		if e.Slot < 0 {
			return fmt.Sprintf("%s (%s)", e.Kind, t.safe(e.Reason))
		}
		return fmt.Sprintf("%s: slot %d pid %d (%s)", e.Kind, e.Slot, e.PID, t.safe(e.Reason))
	case history.KindAway:
		return fmt.Sprintf("slot %d pid %d steered away: %s", e.Slot, e.PID, t.safe(e.Reason))
	case history.KindHandedOver:
		return "handed over to a new master"
	case history.KindTookOver:
		return fmt.Sprintf("took over %s with generation %d", t.safe(e.Reason), e.Generation)
	case history.KindStopping:
		return "stopping"
	}
	return t.safe(fmt.Sprintf("%s generation %d %s", e.Kind, e.Generation, e.Reason))
}

// CPU returns the CPU percentage of pid over the last two polls, and
// whether there is one.
func (t *Tracker) CPU(pid int) (float64, bool) {
	c, ok := t.cpu[pid]
	return c, ok
}

// Step is the reload under way in the last status, if any.
func (t *Tracker) Step(now time.Time) (Step, bool) {
	if t.prev == nil {
		return Step{}, false
	}
	return t.progress.Step(*t.prev, now)
}
