package workers

import (
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/upgrade"
)

// steeredConfig is fastConfig with one steered listener (classic BPF,
// which needs no privilege).
func steeredConfig(t *testing.T, n int) Config {
	t.Helper()
	g, err := steer.New(upgrade.Spec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}, steer.Options{Slots: n, Mechanism: steer.CBPF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	cfg := fastConfig(n)
	cfg.Listeners = []Listener{{Name: "http", Network: "tcp", Addr: g.Addr(), Fd: -1, Group: g}}
	return cfg
}

// steeredNow reads the supervisor's current choice, on its goroutine.
func (ts *testSup) steeredNow() []steer.Target {
	c := make(chan []steer.Target, 1)
	g := ts.s.cfg.Listeners[0].Group
	if !ts.s.post(func() { c <- slices.Clone(ts.s.steered[g]) }) {
		return nil
	}
	return <-c
}

func (ts *testSup) waitSteered(what string, want []steer.Target) {
	ts.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got []steer.Target
	for time.Now().Before(deadline) {
		if got = ts.steeredNow(); slices.Equal(got, want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	ts.t.Fatalf("%s: steered to %v, want %v", what, got, want)
}

func bank(b int, slots ...int) []steer.Target {
	var out []steer.Target
	for _, s := range slots {
		out = append(out, steer.Target{Slot: s, Bank: b})
	}
	return out
}

// The first generation's workers get connections as each becomes ready.
func TestSteerFirstGenerationSlotBySlot(t *testing.T) {
	gate := make(chan struct{})
	ts := runSup(t, steeredConfig(t, 2), func(gen, slot int) behaviour {
		if slot == 1 {
			return behaviour{gate: gate}
		}
		return good(gen, slot)
	})
	ts.waitSteered("slot 0 ready", bank(0, 0))
	close(gate)
	ts.waitSteered("both ready", bank(0, 0, 1))
}

// A master that took over steers to its first generation only once all
// of it is ready: until then its predecessor's workers serve.
func TestSteerTakeOverAllAtOnce(t *testing.T) {
	cfg := steeredConfig(t, 2)
	cfg.TakeOver, cfg.FirstBanks = true, []int{1, 1}
	gate := make(chan struct{})
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		if slot == 1 {
			return behaviour{gate: gate}
		}
		return good(gen, slot)
	})
	ts.waitFor("slot 0 ready", func(st Status) bool { return countState(st, 1, Ready) == 1 })
	if got := ts.steeredNow(); len(got) != 0 {
		t.Fatalf("steered to %v before the generation was ready", got)
	}
	close(gate)
	ts.waitSteered("generation ready", bank(1, 0, 1))
}

// A surge reload: the new generation gets no connection on probation;
// at commit every slot switches to its bank at once; each old worker is
// stopped only after its socket has been steered away from for the quiet
// period.
func TestSteerSurgeReload(t *testing.T) {
	cfg := steeredConfig(t, 3)
	cfg.MinUptime = 300 * time.Millisecond
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 3)
	ts.waitSteered("generation 1", bank(0, 0, 1, 2))
	res := ts.s.Reload(ReloadRequest{})
	ts.waitFor("probation", func(st Status) bool { return st.Rollover != nil && st.Rollover.Phase == RollProbation })
	if got := ts.steeredNow(); !slices.Equal(got, bank(0, 0, 1, 2)) {
		t.Errorf("steered to %v during probation, want generation 1's bank only", got)
	}
	if r := <-res; !r.OK {
		t.Fatal(r.Error)
	}
	ts.waitSteered("generation 2", bank(1, 0, 1, 2))
	ev := ts.f.events()
	if i, j := indexOf(ev, "signal g1"), indexOf(ev, "start g2 s2"); i < j {
		t.Errorf("an old worker was stopped before the new ones started")
	}
}

// A worker that dies is steered away from until its replacement is
// ready.
func TestSteerAwayFromDeadWorker(t *testing.T) {
	gate := make(chan struct{})
	ts := runSup(t, steeredConfig(t, 2), func(gen, slot int) behaviour {
		return good(gen, slot)
	})
	ts.waitSteered("both ready", bank(0, 0, 1))
	ts.f.behave = func(gen, slot int) behaviour { return behaviour{gate: gate} }
	st := ts.s.Status()
	ts.procByPID(st.Workers[1].PID).kill()
	ts.waitSteered("slot 1 dead", bank(0, 0))
	close(gate)
	ts.waitSteered("slot 1 replaced", bank(0, 0, 1))
}

// The old worker of a surge reload is stopped no sooner than the quiet
// period after it stopped getting connections.
func TestSteerQuietBeforeStop(t *testing.T) {
	cfg := steeredConfig(t, 1)
	cfg.MinUptime = -1
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 1)
	ts.waitSteered("generation 1", bank(0, 0))
	r := ts.reload()
	if !r.OK {
		t.Fatal(r.Error)
	}
	ts.waitSteered("generation 2", bank(1, 0))
	stop := ts.f.times("signal g1 s0 SIGTERM")
	if len(stop) != 1 {
		t.Fatalf("old worker's stop signals: %v", stop)
	}
	// The switch comes right after the commit, which is when the new
	// generation served: measured from the commit, the gap is if
	// anything longer than the real one.
	if gap := stop[0].Sub(r.Started.Add(r.Serving)); gap < steerQuiet {
		t.Errorf("old worker stopped %v after the switch, want at least %v", gap, steerQuiet)
	}
}
