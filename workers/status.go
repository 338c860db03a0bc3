package workers

import (
	"os"
	"sort"
	"time"
)

// EventKind says what happened.
type EventKind int

// Lifecycle events, for sd_notify.
const (
	// EventServing: the first generation is ready.
	EventServing EventKind = iota + 1
	// EventReloading: a reload started.
	EventReloading
	// EventReloaded: a reload ended, well or not (Event.Reload says).
	EventReloaded
	// EventStopping: the master is stopping its workers.
	EventStopping
	// EventChanged: a worker changed state.
	EventChanged
)

// Event is passed to Config.OnEvent.
type Event struct {
	Kind       EventKind
	Generation int
	Reload     *ReloadResult
	Status     Status
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Generation int       `json:"generation"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	Started    time.Time `json:"started"`
	// ServingMS is the time from the reload's start until every new
	// worker was ready; DurationMS until the old generation was gone.
	ServingMS  float64 `json:"serving_ms"`
	DurationMS float64 `json:"duration_ms"`
}

// WorkerStatus describes one slot's worker, or its backoff.
type WorkerStatus struct {
	Slot       int       `json:"slot"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	State      State     `json:"state"`
	Since      time.Time `json:"since"`
	Restarts   int       `json:"restarts"`
	Status     string    `json:"status,omitempty"`
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
}

// Status is a snapshot of the supervisor.
type Status struct {
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	Generation int       `json:"generation"`
	Serving    bool      `json:"serving"`
	Reloading  int       `json:"reloading,omitempty"`
	// ReloadPending is set when a reload was asked for and has not
	// started yet (it waits for the running one).
	ReloadPending bool             `json:"reload_pending,omitempty"`
	Workers       []WorkerStatus   `json:"workers"`
	LastReload    *ReloadResult    `json:"last_reload"`
	Listeners     []ListenerStatus `json:"listeners"`
}

func (s *Supervisor) Status() Status {
	s.mu.Lock()
	st := Status{
		PID:           os.Getpid(),
		Started:       s.started,
		Serving:       s.isServing,
		Reloading:     s.reloading,
		ReloadPending: len(s.waiters) > 0,
	}
	if s.serving != nil {
		st.Generation = s.serving.num
	}
	if s.lastReload != nil {
		r := *s.lastReload
		st.LastReload = &r
	}
	gens := append([]*generation(nil), s.gens...)
	var slots []*slot
	for _, g := range gens {
		slots = append(slots, g.slots...)
	}
	s.mu.Unlock()
	st.Workers = []WorkerStatus{}
	for _, sl := range slots {
		if ws, ok := sl.snapshot(); ok {
			st.Workers = append(st.Workers, ws)
		}
	}
	sort.SliceStable(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		if a.Generation != b.Generation {
			return a.Generation < b.Generation
		}
		return a.Slot < b.Slot
	})
	for _, l := range s.cfg.Listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{Name: l.Name, Network: l.Network, Addr: l.Addr})
	}
	return st
}
