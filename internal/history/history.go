package history

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// DefaultSize is the number of entries a History keeps by default.
const DefaultSize = 256

// maxGenerations is the number of generations a History remembers.
const maxGenerations = 32

// Kind says what an Entry records.
type Kind string

// Entry kinds.
const (
	// KindServing: a generation served for the first time.
	KindServing Kind = "serving"
	// KindReloading: a reload (or master upgrade) started.
	KindReloading Kind = "reloading"
	// KindReload: a reload of the workers ended; OK and Reason say how.
	KindReload Kind = "reload"
	// KindUpgrade: an upgrade of the master ended; OK and Reason say how.
	KindUpgrade Kind = "upgrade"
	// KindRestart: a worker was replaced after it failed or exited on
	// its own (Reason "failed" or "exited").
	KindRestart Kind = "restart"
	// KindKill: a worker was killed from outside and replaced (Reason
	// "killed").
	KindKill Kind = "kill"
	// KindRecycle: a worker was recycled above the memory limit (Reason
	// "memory").
	KindRecycle Kind = "recycle"
	// KindHung: a worker was replaced as hung (Reason "hung", "watchdog"
	// or "unhealthy").
	KindHung Kind = "hung"
	// KindAway: a ready worker is steered away from (Reason says why).
	KindAway Kind = "away"
	// KindHandedOver: a new master took over.
	KindHandedOver Kind = "handed-over"
	// KindTookOver: this master took over from an older one (Reason
	// names its pid); the entries before it are the older master's,
	// handed over with the sockets.
	KindTookOver Kind = "took-over"
	// KindStopping: the master began to stop.
	KindStopping Kind = "stopping"
)

// kindOf maps a Counters.Restarts reason to the kind of its entry.
func kindOf(reason string) Kind {
	switch reason {
	case "killed":
		return KindKill
	case "memory":
		return KindRecycle
	case "hung", "watchdog", "unhealthy":
		return KindHung
	}
	return KindRestart
}

// Entry is one event in the history.
type Entry struct {
	// Seq numbers entries from 1 up, without gaps.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Generation is the generation concerned: the reload's new one, the
	// worker's.
	Generation int `json:"generation,omitempty"`
	// Slot and PID name the worker concerned (PID is the process that
	// went away); Slot is -1 when no worker is concerned or it could not
	// be told.
	Slot int `json:"slot"`
	PID  int `json:"pid,omitempty"`
	// Reason is a restart's reason (a Counters.Restarts key), a failed
	// reload's error, or why a worker is steered away from.
	Reason string `json:"reason,omitempty"`
	// OK is a reload's outcome.
	OK bool `json:"ok,omitempty"`
	// Duration is a reload's, from the request until the old generation
	// was gone; Serving until the new one served. They marshal as
	// milliseconds (duration_ms, serving_ms).
	Duration time.Duration `json:"-"`
	Serving  time.Duration `json:"-"`
}

type entryJSON struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Kind       Kind      `json:"kind"`
	Generation int       `json:"generation,omitempty"`
	Slot       int       `json:"slot"`
	PID        int       `json:"pid,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	OK         bool      `json:"ok,omitempty"`
	DurationMS float64   `json:"duration_ms,omitempty"`
	ServingMS  float64   `json:"serving_ms,omitempty"`
}

// MarshalJSON writes the durations as milliseconds.
func (e Entry) MarshalJSON() ([]byte, error) {
	return json.Marshal(entryJSON{e.Seq, e.Time, e.Kind, e.Generation, e.Slot, e.PID, e.Reason, e.OK,
		float64(e.Duration.Microseconds()) / 1000, float64(e.Serving.Microseconds()) / 1000})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Entry{j.Seq, j.Time, j.Kind, j.Generation, j.Slot, j.PID, j.Reason, j.OK,
		time.Duration(j.DurationMS * float64(time.Millisecond)), time.Duration(j.ServingMS * float64(time.Millisecond))}
	return nil
}

// Generation is when one generation served.
type Generation struct {
	Generation int       `json:"generation"`
	Since      time.Time `json:"since"`
	// Until is when the next generation took over (zero while it
	// serves).
	Until time.Time `json:"until,omitzero"`
}

// History is a bounded record of the master's recent events.
type History struct {
	now func() time.Time

	mu      sync.RWMutex
	ring    []Entry // ring[(seq-1)%len(ring)] holds entry seq
	last    uint64  // the last seq given
	gens    []Generation
	changed chan struct{} // closed at the next Add

	// Observe's own state (one writer).
	prev    workers.Status
	hasPrev bool
	// gone holds the workers that went away (not while draining) and
	// that no restart has been matched to yet, the last maxGone: the
	// supervisor may count a restart in a later status than the one
	// where its worker went.
	gone []workers.WorkerStatus
}

// maxGone bounds History.gone.
const maxGone = 16

// New returns a History of the last size entries (DefaultSize if size
// is not positive).
func New(size int) *History {
	if size <= 0 {
		size = DefaultSize
	}
	return &History{now: time.Now, ring: make([]Entry, size), changed: make(chan struct{})}
}

// Size is the number of entries kept.
func (h *History) Size() int { return len(h.ring) }

// Add records e, giving it the next sequence number (and the time now if
// it has none), and returns it.
func (h *History) Add(e Entry) Entry {
	if e.Time.IsZero() {
		e.Time = h.now()
	}
	e.Time = e.Time.Round(0) // wall clock only: it is shown and marshalled
	h.mu.Lock()
	h.last++
	e.Seq = h.last
	h.ring[(e.Seq-1)%uint64(len(h.ring))] = e
	c := h.changed
	h.changed = make(chan struct{})
	h.mu.Unlock()
	close(c)
	return e
}

// Last is the sequence number of the last entry (0 before any).
func (h *History) Last() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.last
}

// Since returns the entries after seq, oldest first, at most max of them
// (all kept if max is not positive): the oldest ones when more are
// kept. missed is how many entries after seq are no longer kept.
func (h *History) Since(seq uint64, max int) (entries []Entry, missed uint64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if seq >= h.last {
		return nil, 0
	}
	first := seq + 1
	if n := uint64(len(h.ring)); h.last-seq > n {
		first = h.last - n + 1
		missed = first - seq - 1
	}
	end := h.last
	if max > 0 && end-first+1 > uint64(max) {
		end = first + uint64(max) - 1
	}
	entries = make([]Entry, 0, end-first+1)
	for s := first; s <= end; s++ {
		entries = append(entries, h.ring[(s-1)%uint64(len(h.ring))])
	}
	return entries, missed
}

// Changed returns a channel closed at the next Add.
func (h *History) Changed() <-chan struct{} {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.changed
}

// Generations returns the last generations that served, oldest first.
func (h *History) Generations() []Generation {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]Generation(nil), h.gens...)
}

// Observe derives entries from a lifecycle event. It runs on the
// supervisor's goroutine; it must not be called concurrently with
// itself.
func (h *History) Observe(e workers.Event) {
	now := h.now()
	st := e.Status
	switch e.Kind {
	case workers.EventReloading:
		gen, master := e.Generation, false
		if st.Rollover != nil {
			if gen == 0 {
				gen = st.Rollover.Generation
			}
			master = st.Rollover.Master
		}
		if gen == 0 {
			gen = st.Reloading
		}
		reason := ""
		if master {
			reason = "master upgrade"
		}
		h.Add(Entry{Time: now, Kind: KindReloading, Generation: gen, Slot: -1, Reason: reason})
	case workers.EventReloaded:
		if r := e.Reload; r != nil {
			k := KindReload
			if r.Master {
				k = KindUpgrade
			}
			h.Add(Entry{Time: now, Kind: k, Generation: r.Generation, Slot: -1, OK: r.OK, Reason: r.Error,
				Duration: r.Duration, Serving: r.Serving})
		}
	case workers.EventHandedOver:
		h.Add(Entry{Time: now, Kind: KindHandedOver, Generation: st.Generation, Slot: -1})
	case workers.EventStopping:
		h.Add(Entry{Time: now, Kind: KindStopping, Generation: st.Generation, Slot: -1})
	}
	if st.Serving {
		h.served(st.Generation, now)
	}
	if h.hasPrev {
		h.diff(h.prev, st, now)
	}
	h.prev, h.hasPrev = st, true
}

// served notes that gen serves at now.
func (h *History) served(gen int, now time.Time) {
	h.mu.Lock()
	n := len(h.gens)
	if n > 0 && h.gens[n-1].Generation == gen {
		h.mu.Unlock()
		return
	}
	if n > 0 {
		h.gens[n-1].Until = now
	}
	if n == maxGenerations {
		copy(h.gens, h.gens[1:])
		h.gens = h.gens[:n-1]
	}
	h.gens = append(h.gens, Generation{Generation: gen, Since: now})
	h.mu.Unlock()
	h.Add(Entry{Time: now, Kind: KindServing, Generation: gen, Slot: -1})
}

// diff adds the entries that tell prev from cur: restarts (by reason,
// matched to the workers gone) and workers newly steered away from.
func (h *History) diff(prev, cur workers.Status, now time.Time) {
	pids := make(map[int]bool, len(cur.Workers))
	for _, w := range cur.Workers {
		if w.PID > 0 && w.State != workers.Exited && w.State != workers.Gone {
			pids[w.PID] = true
		}
	}
	// The workers that went away since prev, by slot, after those gone
	// before and not matched yet (a draining one
	// retires: no restart is its).
	var gone []workers.WorkerStatus
	for _, w := range prev.Workers {
		if w.PID > 0 && w.State != workers.Exited && w.State != workers.Gone && w.State != workers.Draining && !pids[w.PID] {
			gone = append(gone, w)
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].Slot < gone[j].Slot })
	gone = append(h.gone, gone...)
	reasons := make([]string, 0, len(cur.Counters.Restarts))
	for r := range cur.Counters.Restarts {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	// Hung-type restarts first: they match the worker that was away for
	// that reason.
	sort.SliceStable(reasons, func(i, j int) bool { return kindOf(reasons[i]) == KindHung && kindOf(reasons[j]) != KindHung })
	for _, r := range reasons {
		for d := cur.Counters.Restarts[r] - prev.Counters.Restarts[r]; d > 0; d-- {
			e := Entry{Time: now, Kind: kindOf(r), Reason: r, Slot: -1, Generation: cur.Generation}
			if i := pick(gone, r); i >= 0 {
				w := gone[i]
				e.Slot, e.PID, e.Generation = w.Slot, w.PID, w.Generation
				gone = append(gone[:i], gone[i+1:]...)
			}
			h.Add(e)
		}
	}
	if len(gone) > maxGone {
		gone = gone[len(gone)-maxGone:]
	}
	h.gone = append(h.gone[:0:0], gone...)
	was := make(map[int]string, len(prev.Workers))
	for _, w := range prev.Workers {
		was[w.PID] = w.AwayFor
	}
	for _, w := range cur.Workers {
		if w.PID > 0 && w.Away != "" && was[w.PID] != w.AwayFor {
			h.Add(Entry{Time: now, Kind: KindAway, Generation: w.Generation, Slot: w.Slot, PID: w.PID, Reason: w.Away})
		}
	}
}

// pick chooses, among the workers gone (oldest first), the one a
// restart for reason most likely concerns: the last gone of those away
// for that reason, else the last gone.
func pick(gone []workers.WorkerStatus, reason string) int {
	for i := len(gone) - 1; i >= 0; i-- {
		if gone[i].AwayFor == reason {
			return i
		}
	}
	return len(gone) - 1
}
