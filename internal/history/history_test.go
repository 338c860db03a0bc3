package history

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

func worker(slot, pid, gen int) workers.WorkerStatus {
	return workers.WorkerStatus{Slot: slot, PID: pid, Generation: gen, State: workers.Ready}
}

func status(gen int, restarts map[string]int, ws ...workers.WorkerStatus) workers.Status {
	return workers.Status{Generation: gen, Serving: true, Phase: workers.MasterServing,
		Counters: workers.Counters{Restarts: restarts}, Workers: ws}
}

func kinds(es []Entry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%s(g%d s%d p%d %s) ", e.Kind, e.Generation, e.Slot, e.PID, e.Reason)
	}
	return s
}

func TestObserveDerivesEntries(t *testing.T) {
	h := New(16)
	ch := h.Changed()
	h.Observe(workers.Event{Kind: workers.EventServing, Status: status(1, nil, worker(0, 10, 1), worker(1, 11, 1))})
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by an entry")
	}
	// Worker 11 killed: the counter rises, its pid goes.
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"killed": 1},
		worker(0, 10, 1), workers.WorkerStatus{Slot: 1, Generation: 1, State: workers.Backoff})})
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"killed": 1}, worker(0, 10, 1), worker(1, 12, 1))})
	// Worker 10 steered away as hung, then replaced.
	away := worker(0, 10, 1)
	away.Away, away.AwayFor = "its queue does not move", "hung"
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"killed": 1}, away, worker(1, 12, 1))})
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"killed": 1, "hung": 1}, worker(0, 13, 1), worker(1, 12, 1))})
	// A reload to generation 2: old workers retire without a restart.
	rs := status(1, map[string]int{"killed": 1, "hung": 1}, worker(0, 13, 1), worker(1, 12, 1), worker(0, 20, 2))
	rs.Rollover = &workers.RolloverStatus{Generation: 2}
	h.Observe(workers.Event{Kind: workers.EventReloading, Generation: 2, Status: rs})
	h.Observe(workers.Event{Kind: workers.EventReloaded, Generation: 2,
		Reload: &workers.ReloadResult{Generation: 2, OK: true, Duration: 1500 * time.Millisecond, Serving: time.Second},
		Status: status(2, map[string]int{"killed": 1, "hung": 1}, worker(0, 20, 2), worker(1, 21, 2))})
	h.Observe(workers.Event{Kind: workers.EventReloaded, Generation: 3,
		Reload: &workers.ReloadResult{Generation: 3, Error: "worker exited before ready", Master: true},
		Status: status(2, map[string]int{"killed": 1, "hung": 1}, worker(0, 20, 2), worker(1, 21, 2))})

	es, missed := h.Since(0, 0)
	want := "serving(g1 s-1 p0 ) kill(g1 s1 p11 killed) away(g1 s0 p10 its queue does not move) hung(g1 s0 p10 hung) " +
		"reloading(g2 s-1 p0 ) reload(g2 s-1 p0 ) serving(g2 s-1 p0 ) upgrade(g3 s-1 p0 worker exited before ready) "
	if got := kinds(es); got != want || missed != 0 {
		t.Fatalf("entries:\n got %s\nwant %s (missed %d)", got, want, missed)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
	}
	if r := es[5]; !r.OK || r.Duration != 1500*time.Millisecond || r.Serving != time.Second {
		t.Fatalf("reload entry %+v", r)
	}
	if es[7].OK {
		t.Fatal("failed upgrade marked ok")
	}
	gens := h.Generations()
	if len(gens) != 2 || gens[0].Generation != 1 || gens[0].Until.IsZero() || gens[1].Generation != 2 || !gens[1].Until.IsZero() {
		t.Fatalf("generations %+v", gens)
	}
	b, err := json.Marshal(es[5])
	if err != nil {
		t.Fatal(err)
	}
	var back Entry
	err = json.Unmarshal(b, &back)
	orig := es[5]
	if err == nil && back.Time.Equal(orig.Time) {
		back.Time, orig.Time = time.Time{}, time.Time{}
	}
	if err != nil || back != orig {
		t.Fatalf("JSON round trip: %s -> %+v (%v)", b, back, err)
	}
}

func TestRingBounded(t *testing.T) {
	h := New(4)
	for i := 0; i < 10; i++ {
		h.Add(Entry{Kind: KindRestart, PID: i})
	}
	es, missed := h.Since(0, 0)
	if len(es) != 4 || missed != 6 || es[0].Seq != 7 || es[3].Seq != 10 || es[0].PID != 6 {
		t.Fatalf("since 0: %d entries, missed %d, %+v", len(es), missed, es)
	}
	es, missed = h.Since(8, 0)
	if len(es) != 2 || missed != 0 || es[0].Seq != 9 {
		t.Fatalf("since 8: %+v missed %d", es, missed)
	}
	es, _ = h.Since(6, 1)
	if len(es) != 1 || es[0].Seq != 7 {
		t.Fatalf("since 6 max 1: %+v", es)
	}
	if es, _ := h.Since(10, 0); es != nil {
		t.Fatalf("since last: %+v", es)
	}
	for i := 0; i < 100; i++ {
		h.Observe(workers.Event{Kind: workers.EventServing, Status: status(i+1, nil)})
	}
	if g := h.Generations(); len(g) != maxGenerations || g[len(g)-1].Generation != 100 {
		t.Fatalf("%d generations kept, last %+v", len(g), g[len(g)-1])
	}
}

func TestConcurrentReaders(t *testing.T) {
	h := New(8)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seen uint64
			for {
				select {
				case <-stop:
					return
				case <-h.Changed():
				}
				es, _ := h.Since(seen, 0)
				for _, e := range es {
					if e.Seq <= seen {
						t.Errorf("seq %d after %d", e.Seq, seen)
						return
					}
					seen = e.Seq
				}
				h.Generations()
			}
		}()
	}
	for i := 0; i < 500; i++ {
		h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"killed": i}, worker(0, 1000+i, 1))})
	}
	close(stop)
	wg.Wait()
	if h.Last() != 500 { // one serving entry, 499 kills
		t.Fatalf("last seq %d", h.Last())
	}
}

// The supervisor may show a worker gone in one status and count its
// restart in a later one; a draining worker's going is no restart.
func TestRestartCountedLater(t *testing.T) {
	h := New(16)
	h.Observe(workers.Event{Kind: workers.EventServing, Status: status(1, nil, worker(0, 10, 1), worker(1, 11, 1))})
	draining := worker(0, 10, 1)
	draining.State = workers.Draining
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, nil, draining, worker(1, 11, 1), worker(0, 20, 2))})
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, nil, worker(1, 11, 1), worker(0, 20, 2))})
	exited := worker(1, 11, 1)
	exited.State = workers.Exited
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, nil, exited, worker(0, 20, 2))})
	h.Observe(workers.Event{Kind: workers.EventChanged, Status: status(1, map[string]int{"exited": 1}, worker(0, 20, 2))})
	es, _ := h.Since(0, 0)
	if got, want := kinds(es), "serving(g1 s-1 p0 ) restart(g1 s1 p11 exited) "; got != want {
		t.Fatalf("entries:\n got %s\nwant %s", got, want)
	}
	if len(h.gone) != 0 {
		t.Fatalf("gone workers left unmatched: %+v", h.gone)
	}
}
