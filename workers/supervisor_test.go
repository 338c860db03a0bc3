package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no command", Config{Workers: 1}, "no command"},
		{"zero workers", Config{Command: []string{"/bin/true"}}, "workers must be between 1 and 1024, not 0"},
		{"too many workers", Config{Command: []string{"/bin/true"}, Workers: 100000}, "workers must be between 1 and 1024, not 100000"},
		{"bad strategy", Config{Command: []string{"/bin/true"}, Workers: 1, Strategy: "yolo"}, `unknown reload strategy "yolo"`},
		{"missing command", Config{Command: []string{"/nonexistent/app"}, Workers: 1}, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want %q", err, tt.want)
			}
		})
	}
}

// The first generation serves once every worker is ready: one
// EventServing, and the master's phase follows.
func TestFirstGenerationServes(t *testing.T) {
	ts := runSup(t, fastConfig(3), good)
	st := ts.waitServing(1, 3)
	if st.Phase != MasterServing {
		t.Errorf("phase %q, want serving", st.Phase)
	}
	if len(st.Generations) != 1 || st.Generations[0].Phase != GenServing {
		t.Errorf("generations %+v", st.Generations)
	}
	if evs := ts.events(EventServing); len(evs) != 1 || evs[0].Generation != 1 {
		t.Errorf("EventServing: %+v", evs)
	}
}

// A binary that exits before READY backs off, doubling; the slot shows
// backoff meanwhile.
func TestCrashLoopBacksOff(t *testing.T) {
	ts := runSup(t, fastConfig(1), func(gen, slot int) behaviour {
		return behaviour{never: true, exitAt: time.Millisecond, exitCode: 3}
	})
	st := ts.waitFor("three restarts", func(st Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].Restarts >= 3 && st.Workers[0].State == Backoff
	})
	if st.Serving || st.Phase != MasterStarting {
		t.Errorf("serving %v, phase %q", st.Serving, st.Phase)
	}
	// Starts are spaced by the backoff: at least 100, 200, 400 ms after
	// each exit (a busy machine is slower, never faster).
	ts.waitFor("four starts", func(Status) bool { return len(ts.f.times("start g1 s0")) >= 4 })
	starts, exits := ts.f.times("start g1 s0"), ts.f.times("exit g1 s0")
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		if gap := starts[i+1].Sub(exits[i]); gap < want {
			t.Errorf("start %d came %v after the exit before it, want at least %v", i+2, gap, want)
		}
	}
}

// The kill storm: workers that were ready and are killed from outside are
// replaced at once, never backed off, however often it happens.
func TestKillStormNeverBacksOff(t *testing.T) {
	cfg := fastConfig(2)
	cfg.MinUptime = time.Hour // kills land well within it
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 2)
	killed := map[int]bool{}
	for i := 0; i < 30; i++ {
		// As an operator would: a pid that status shows ready, once the
		// previous kill's replacement is ready.
		st := ts.waitFor("both slots ready", func(st Status) bool {
			n := 0
			for _, w := range st.Workers {
				if w.State == Backoff {
					t.Fatalf("slot %d backed off during the kill storm", w.Slot)
				}
				if w.State == Ready && !killed[w.PID] {
					n++
				}
			}
			return n == 2
		})
		pid := st.Workers[i%2].PID
		killed[pid] = true
		ts.procByPID(pid).kill()
	}
	st := ts.waitFor("both replacements ready", func(st Status) bool {
		return len(st.Workers) == 2 && countState(st, 1, Ready) == 2 && !killed[st.Workers[0].PID] && !killed[st.Workers[1].PID]
	})
	for _, e := range ts.events(EventChanged) {
		for _, w := range e.Status.Workers {
			if w.State == Backoff {
				t.Fatalf("a slot backed off during the kill storm: %+v", e.Status.Workers)
			}
		}
	}
	if r := st.Workers[0].Restarts + st.Workers[1].Restarts; r != 30 {
		t.Errorf("%d restarts, want 30", r)
	}
	if c := st.Counters.Restarts; c["killed"] != 30 || c["failed"] != 0 {
		t.Errorf("restart counters %v, want 30 killed", c)
	}
}

// gunicorn without --preload: READY=1, then the app's import fails. In
// the first generation that is a crash loop and backs off.
func TestExitSoonAfterReadyBacksOff(t *testing.T) {
	cfg := fastConfig(1)
	cfg.MinUptime = time.Hour
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		return behaviour{readyAfter: time.Millisecond, exitAt: 20 * time.Millisecond, afterReady: true, exitCode: 1}
	})
	ts.waitFor("a backoff", func(st Status) bool { return len(st.Workers) == 1 && st.Workers[0].State == Backoff })
}

// A surge reload: every new worker starts at once, the new generation
// stays on probation for the minimum uptime, then the old one is retired
// one worker at a time.
func TestSurgeReload(t *testing.T) {
	cfg := fastConfig(4)
	cfg.MinUptime = 200 * time.Millisecond
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 4)
	res := ts.reload()
	if !res.OK || res.Generation != 2 || res.Error != "" {
		t.Fatalf("reload: %+v", res)
	}
	if res.Serving < cfg.MinUptime || res.Duration < res.Serving {
		t.Errorf("serving after %v, took %v: probation is %v", res.Serving, res.Duration, cfg.MinUptime)
	}
	st := ts.waitServing(2, 4)
	if st.LastReload == nil || !st.LastReload.OK || st.Phase != MasterServing {
		t.Errorf("status after reload: %+v", st)
	}
	// No old worker got its stop signal before the new generation had
	// passed probation, and they were stopped one at a time.
	ev := ts.f.events()
	firstStop := indexOf(ev, "signal g1")
	for slot := 0; slot < 4; slot++ {
		if i := indexOf(ev, fmt.Sprintf("start g2 s%d", slot)); i < 0 || i > firstStop {
			t.Errorf("new slot %d started at %d, after the first old stop at %d", slot, i, firstStop)
		}
	}
	assertOneAtATime(t, ev, 1, 1)
	if n := maxRunning(ev); n != 8 {
		t.Errorf("%d workers at once, want 8", n)
	}
	if evs := ts.events(EventReloaded); len(evs) != 1 || !evs[0].Reload.OK {
		t.Errorf("EventReloaded: %+v", evs)
	}
}

// maxRunning is the most simulated processes alive at once.
func maxRunning(ev []string) int {
	n, most := 0, 0
	for _, e := range ev {
		switch {
		case strings.HasPrefix(e, "start "):
			n++
		case strings.HasPrefix(e, "exit "):
			n--
		}
		most = max(most, n)
	}
	return most
}

func indexOf(ev []string, prefix string) int {
	for i, e := range ev {
		if strings.HasPrefix(e, prefix) {
			return i
		}
	}
	return -1
}

// assertOneAtATime checks that generation gen's workers were stopped at
// most n at a time: between a stop signal and that worker's exit, at most
// n-1 other stops.
func assertOneAtATime(t *testing.T, ev []string, gen, n int) {
	t.Helper()
	draining := map[string]bool{}
	most := 0
	for _, e := range ev {
		var g, s int
		var what string
		if _, err := fmt.Sscanf(e, "signal g%d s%d %s", &g, &s, &what); err == nil && g == gen && what != "SIGKILL" {
			draining[fmt.Sprint(s)] = true
		}
		if _, err := fmt.Sscanf(e, "exit g%d s%d", &g, &s); err == nil && g == gen {
			delete(draining, fmt.Sprint(s))
		}
		most = max(most, len(draining))
	}
	if most > n {
		t.Errorf("%d workers of generation %d draining at once, want at most %d; events:\n%s", most, gen, n, strings.Join(ev, "\n"))
	}
	if most == 0 {
		t.Errorf("no worker of generation %d was stopped", gen)
	}
}

func TestRetireParallel(t *testing.T) {
	cfg := fastConfig(6)
	cfg.MinUptime = -1
	cfg.RetireParallel = 3
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		return behaviour{readyAfter: time.Millisecond, stopTakes: 30 * time.Millisecond}
	})
	ts.waitServing(1, 6)
	if res := ts.reload(); !res.OK {
		t.Fatal(res.Error)
	}
	assertOneAtATime(t, ts.f.events(), 1, 3)
}

// Ready is not healthy: a release whose workers send READY=1 and exit
// 30 ms later fails its reload during probation, and the old generation
// serves on untouched.
func TestProbationFailureRollsBack(t *testing.T) {
	cfg := fastConfig(3)
	cfg.MinUptime = time.Second
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		if gen == 2 && slot == 1 {
			return behaviour{readyAfter: time.Millisecond, exitAt: 30 * time.Millisecond, afterReady: true, exitCode: 1}
		}
		return good(gen, slot)
	})
	before := pids(ts.waitServing(1, 3), 1)
	res := ts.reload()
	if res.OK || !strings.Contains(res.Error, "slot 1: exited with status 1") || !strings.Contains(res.Error, "after ready") {
		t.Fatalf("reload: %+v", res)
	}
	st := ts.waitServing(1, 3)
	if after := pids(st, 1); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("old generation's pids changed: %v → %v", before, after)
	}
	for _, w := range st.Workers {
		if w.Restarts != 0 {
			t.Errorf("old worker restarted: %+v", w)
		}
	}
	if strings.Contains(strings.Join(ts.f.events(), "\n"), "signal g1") {
		t.Error("an old worker was signalled")
	}
	if st.LastReload == nil || st.LastReload.OK {
		t.Errorf("last reload %+v", st.LastReload)
	}
	if c := st.Counters.Reloads; c["failed"] != 1 || c["ok"] != 0 {
		t.Errorf("reload counters %v", c)
	}
}

func TestReloadNeverReadyFails(t *testing.T) {
	cfg := fastConfig(2)
	cfg.ReadyTimeout = 200 * time.Millisecond
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		if gen == 2 {
			return behaviour{never: true}
		}
		return good(gen, slot)
	})
	ts.waitServing(1, 2)
	res := ts.reload()
	if res.OK || !strings.Contains(res.Error, "not ready within 200ms") {
		t.Fatalf("reload: %+v", res)
	}
	ts.waitServing(1, 2)
}

// A rolling reload keeps at most N+1 workers and replaces slots in order.
func TestRollingReload(t *testing.T) {
	cfg := fastConfig(3)
	cfg.Strategy = Rolling
	cfg.MinUptime = 50 * time.Millisecond
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 3)
	if res := ts.reload(); !res.OK {
		t.Fatal(res.Error)
	}
	ts.waitServing(2, 3)
	ev := ts.f.events()
	for slot := 0; slot < 3; slot++ {
		// Old slot i stops after new slot i started, and before new slot i+1.
		started, stopped := indexOf(ev, fmt.Sprintf("start g2 s%d", slot)), indexOf(ev, fmt.Sprintf("signal g1 s%d", slot))
		if started < 0 || stopped < started {
			t.Errorf("slot %d: new started at %d, old stopped at %d", slot, started, stopped)
		}
		if next := indexOf(ev, fmt.Sprintf("start g2 s%d", slot+1)); slot < 2 && next < stopped {
			t.Errorf("slot %d started before old slot %d was stopped", slot+1, slot)
		}
	}
	if n := maxRunning(ev); n != 4 {
		t.Errorf("%d workers at once, want 4", n)
	}
}

// A rolling reload that fails part-way restarts the old slots it had
// already retired, from the old generation's command.
func TestRollingRollback(t *testing.T) {
	cfg := fastConfig(3)
	cfg.Strategy = Rolling
	cfg.MinUptime = 20 * time.Millisecond
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		if gen == 2 && slot == 2 {
			return behaviour{never: true, exitAt: 10 * time.Millisecond, exitCode: 4}
		}
		return good(gen, slot)
	})
	ts.waitServing(1, 3)
	res := ts.reload()
	if res.OK || !strings.Contains(res.Error, "slot 2: exited with status 4 before ready") {
		t.Fatalf("reload: %+v", res)
	}
	st := ts.waitServing(1, 3)
	if len(st.Generations) != 1 || st.Generations[0].Generation != 1 {
		t.Errorf("generations %+v", st.Generations)
	}
	ev := strings.Join(ts.f.events(), "\n")
	if strings.Count(ev, "start g1 s0") != 2 || strings.Count(ev, "start g1 s1") != 2 || strings.Count(ev, "start g1 s2") != 1 {
		t.Errorf("old slots 0 and 1 should have been restarted once, slot 2 never:\n%s", ev)
	}
}

// The case a review found by reading: a reload that starts while the
// first generation is still starting, and fails, must leave the first
// generation to finish starting; once it does it is reported serving.
func TestReloadDuringStartupFails(t *testing.T) {
	for _, strategy := range []Strategy{Rolling, Surge} {
		t.Run(string(strategy), func(t *testing.T) {
			cfg := fastConfig(2)
			cfg.Strategy = strategy
			cfg.MinUptime = 20 * time.Millisecond
			gate := make(chan struct{})
			ts := runSup(t, cfg, func(gen, slot int) behaviour {
				switch {
				case gen == 1 && slot == 1:
					return behaviour{gate: gate}
				case gen == 2 && slot == 1:
					return behaviour{never: true, exitAt: 10 * time.Millisecond, exitCode: 5}
				}
				return good(gen, slot)
			})
			ts.waitFor("slot 0 ready", func(st Status) bool { return countState(st, 1, Ready) == 1 })
			res := ts.reload()
			if res.OK || !strings.Contains(res.Error, "exited with status 5") {
				t.Fatalf("reload: %+v", res)
			}
			st := ts.s.Status()
			if st.Serving || st.Phase != MasterStarting || len(ts.events(EventServing)) != 0 {
				t.Fatalf("serving before generation 1 is ready: %+v", st)
			}
			close(gate)
			st = ts.waitServing(1, 2)
			if st.Phase != MasterServing {
				t.Errorf("phase %q", st.Phase)
			}
			if evs := ts.events(EventServing); len(evs) != 1 || evs[0].Generation != 1 {
				t.Errorf("EventServing: %+v", evs)
			}
		})
	}
}

// A reload during startup that succeeds: the new generation is the first
// to serve.
func TestReloadDuringStartupSucceeds(t *testing.T) {
	cfg := fastConfig(2)
	cfg.MinUptime = 20 * time.Millisecond
	gate := make(chan struct{})
	defer close(gate)
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		if gen == 1 && slot == 1 {
			return behaviour{gate: gate}
		}
		return good(gen, slot)
	})
	ts.waitFor("slot 0 ready", func(st Status) bool { return countState(st, 1, Ready) == 1 })
	if res := ts.reload(); !res.OK {
		t.Fatal(res.Error)
	}
	ts.waitServing(2, 2)
	if evs := ts.events(EventServing); len(evs) != 1 || evs[0].Generation != 2 {
		t.Errorf("EventServing: %+v", evs)
	}
}

// Requests made while a reload runs coalesce into one follow-up.
func TestReloadsCoalesce(t *testing.T) {
	cfg := fastConfig(1)
	cfg.MinUptime = 100 * time.Millisecond
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 1)
	first := ts.s.Reload(ReloadRequest{})
	ts.waitFor("reload running", func(st Status) bool { return st.Rollover != nil })
	var rest []<-chan ReloadResult
	for i := 0; i < 5; i++ {
		rest = append(rest, ts.s.Reload(ReloadRequest{}))
	}
	if r := <-first; !r.OK || r.Generation != 2 {
		t.Fatalf("first: %+v", r)
	}
	for i, c := range rest {
		if r := <-c; !r.OK || r.Generation != 3 {
			t.Errorf("request %d: %+v, want generation 3", i, r)
		}
	}
	ts.waitServing(3, 1)
	if n := len(ts.events(EventReloading)); n != 2 {
		t.Errorf("%d reloads ran, want 2", n)
	}
}

// A reload's timing starts at the request, not when it got its turn.
func TestReloadTimedFromRequest(t *testing.T) {
	ts := runSup(t, fastConfig(1), good)
	ts.waitServing(1, 1)
	at := time.Now().Add(-time.Second)
	r := <-ts.s.Reload(ReloadRequest{At: at})
	if !r.OK || !r.Started.Equal(at) || r.Duration < time.Second || r.Serving < time.Second {
		t.Errorf("reload %+v: timing does not start at the request", r)
	}
}

// A master upgrade that works: the old master's workers are retired one
// at a time, requests queued behind it fail, and Run returns.
func TestMasterHandover(t *testing.T) {
	cfg := fastConfig(3)
	release := make(chan struct{})
	cfg.UpgradeMaster = func(ctx context.Context, h Handover) error {
		if h.LastGeneration != 1 || len(h.Banks) != 3 || h.Banks[0] != 0 {
			return fmt.Errorf("handover %+v", h)
		}
		<-release
		return nil
	}
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		return behaviour{readyAfter: time.Millisecond, stopTakes: 10 * time.Millisecond}
	})
	ts.waitServing(1, 3)
	up := ts.s.Reload(ReloadRequest{Master: true})
	ts.waitFor("upgrading", func(st Status) bool { return st.Phase == MasterUpgrading })
	queued := ts.s.Reload(ReloadRequest{})
	close(release)
	if r := <-up; !r.OK || !r.Master || r.Generation != 2 {
		t.Fatalf("upgrade: %+v", r)
	}
	if r := <-queued; r.OK || !strings.Contains(r.Error, "handed over") {
		t.Errorf("queued reload: %+v", r)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the hand-over")
	}
	ts.done <- nil // for the cleanup
	assertOneAtATime(t, ts.f.events(), 1, 1)
	if len(ts.events(EventHandedOver)) != 1 || len(ts.events(EventStopping)) != 0 {
		t.Error("want one EventHandedOver and no EventStopping")
	}
	if st := ts.s.Status(); st.Phase != MasterHandedOver || len(st.Workers) != 0 {
		t.Errorf("final status %+v", st)
	}
}

func TestMasterUpgradeFails(t *testing.T) {
	cfg := fastConfig(1)
	cfg.UpgradeMaster = func(ctx context.Context, h Handover) error { return errors.New("new master died") }
	ts := runSup(t, cfg, good)
	before := pids(ts.waitServing(1, 1), 1)
	r := <-ts.s.Reload(ReloadRequest{Master: true})
	if r.OK || r.Error != "master upgrade failed: new master died" {
		t.Fatalf("upgrade: %+v", r)
	}
	st := ts.waitServing(1, 1)
	if st.Phase != MasterServing || fmt.Sprint(pids(st, 1)) != fmt.Sprint(before) || !st.LastReload.Master {
		t.Errorf("after a failed upgrade: %+v", st)
	}
	if r := ts.reload(); !r.OK || r.Generation != 2 {
		t.Errorf("next reload: %+v", r)
	}
}

// Stopping during a reload stops both generations; the waiting request
// gets an error, and EventStopping comes before any stop signal.
func TestStopDuringReload(t *testing.T) {
	cfg := fastConfig(2)
	cfg.MinUptime = time.Hour
	var mu sync.Mutex
	var order []string
	ts := runSup(t, cfg, good, func(ts *testSup) {
		ts.s.cfg.OnEvent = func(e Event) {
			ts.record(e)
			if e.Kind == EventStopping {
				mu.Lock()
				order = append(order, fmt.Sprintf("stopping after %d events", len(ts.f.events())))
				mu.Unlock()
			}
		}
	})
	ts.waitServing(1, 2)
	res := ts.s.Reload(ReloadRequest{})
	ts.waitFor("probation", func(st Status) bool { return st.Rollover != nil && st.Rollover.Phase == RollProbation })
	n := len(ts.f.events())
	ts.cancel()
	if r := <-res; r.OK || !strings.Contains(r.Error, "master stopping") {
		t.Errorf("reload: %+v", r)
	}
	select {
	case <-ts.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	ts.done <- nil
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 1 || order[0] != fmt.Sprintf("stopping after %d events", n) {
		t.Errorf("EventStopping came after a stop signal: %v (events before stop: %d)\n%s", order, n, strings.Join(ts.f.events(), "\n"))
	}
	ev := strings.Join(ts.f.events(), "\n")
	for _, w := range []string{"g1 s0", "g1 s1", "g2 s0", "g2 s1"} {
		if !strings.Contains(ev, "signal "+w+" SIGTERM") {
			t.Errorf("%s was not stopped", w)
		}
	}
}

// Kill turns a drain into a kill.
func TestKillDuringStop(t *testing.T) {
	ts := runSup(t, fastConfig(2), func(gen, slot int) behaviour {
		return behaviour{readyAfter: time.Millisecond, ignoreStop: true}
	})
	ts.waitServing(1, 2)
	ts.cancel()
	ts.waitFor("stopping", func(st Status) bool { return st.Phase == MasterStopping })
	ts.s.Kill()
	select {
	case <-ts.done:
	case <-time.After(4 * time.Second): // well below the 5s drain timeout
		t.Fatal("Run did not return after Kill")
	}
	ts.done <- nil
	if n := strings.Count(strings.Join(ts.f.events(), "\n"), "SIGKILL"); n < 2 {
		t.Errorf("%d SIGKILLs, want 2", n)
	}
}

// A worker whose main process exits but leaves a process behind is not
// gone until the rest of its tree is: it gets the stop signal, then
// SIGKILL.
func TestLeftoverTreeStoppedThenKilled(t *testing.T) {
	cfg := fastConfig(1)
	cfg.DrainTimeout = 100 * time.Millisecond // caps the leftover grace
	ts := runSup(t, cfg, func(gen, slot int) behaviour {
		return behaviour{readyAfter: time.Millisecond, leftover: true, stopTakes: time.Millisecond}
	})
	ts.waitServing(1, 1)
	p := ts.proc(1, 0)
	ts.cancel()
	select {
	case <-ts.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	ts.done <- nil
	if !p.treeEmpty() {
		t.Fatal("the leftover process outlived the master's Run")
	}
	ev := strings.Join(ts.f.events(), "\n")
	if !strings.Contains(ev, "signal g1 s0 SIGKILL") {
		t.Errorf("the leftover was not killed:\n%s", ev)
	}
}

func TestReloadResultJSON(t *testing.T) {
	r := ReloadResult{Generation: 3, OK: true, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Serving: 9100 * time.Microsecond, Duration: 1302400 * time.Microsecond}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"generation":3,"ok":true,"started":"2026-01-02T03:04:05Z","serving_ms":9.1,"duration_ms":1302.4}`
	if string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	var back ReloadResult
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	// A failed one names the worker that failed it and its last words.
	r = ReloadResult{Generation: 4, Error: "slot 0: exited with status 1 before ready", Started: r.Started, FailedPID: 42, Stderr: []string{"boom: missing module"}}
	if b, err = json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	want = `{"generation":4,"ok":false,"error":"slot 0: exited with status 1 before ready","started":"2026-01-02T03:04:05Z","serving_ms":0,"duration_ms":0,"failed_pid":42,"stderr":["boom: missing module"]}`
	if string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
	back = ReloadResult{}
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestScaleUpAndDown(t *testing.T) {
	ts := runSup(t, fastConfig(2), good)
	ts.waitServing(1, 2)
	if r := <-ts.s.Scale(4, 0); r.Error != "" || r.Workers != 4 {
		t.Fatalf("scale to 4: %+v", r)
	}
	ts.waitServing(1, 4)
	if r := <-ts.s.Scale(0, -1); r.Error != "" || r.Workers != 3 {
		t.Fatalf("scale down by one: %+v", r)
	}
	st := ts.waitServing(1, 3)
	for i, w := range st.Workers {
		if w.Slot != i {
			t.Fatalf("slots after scaling down: %+v (the highest should go)", st.Workers)
		}
	}
	if !strings.Contains(strings.Join(ts.f.events(), "\n"), "signal g1 s3 SIGTERM") {
		t.Error("slot 3 was not stopped gracefully")
	}
	// A reload keeps the count.
	if r := ts.reload(); !r.OK {
		t.Fatal(r.Error)
	}
	ts.waitServing(2, 3)
	if r := <-ts.s.Scale(MaxWorkers+1, 0); r.Error == "" {
		t.Errorf("scale to %d: %+v, want an error", MaxWorkers+1, r)
	}
	if r := <-ts.s.Scale(0, 0); r.Error != "" || r.Workers != 3 {
		t.Errorf("scale by 0: %+v, want 3 workers and no error", r)
	}
	if r := <-ts.s.Scale(0, -3); r.Error == "" {
		t.Errorf("scale to 0: %+v, want an error", r)
	}
}

// A scale request made during a reload waits for it.
func TestScaleWaitsForReload(t *testing.T) {
	cfg := fastConfig(1)
	cfg.MinUptime = 300 * time.Millisecond
	ts := runSup(t, cfg, good)
	ts.waitServing(1, 1)
	reload := ts.s.Reload(ReloadRequest{})
	ts.waitFor("reload running", func(st Status) bool { return st.Rollover != nil })
	scale := ts.s.Scale(3, 0)
	if r := <-reload; !r.OK {
		t.Fatal(r.Error)
	}
	if r := <-scale; r.Error != "" || r.Workers != 3 {
		t.Fatalf("scale: %+v", r)
	}
	ts.waitServing(2, 3)
}

// A worker above the memory limit for long enough is replaced: the new
// one is ready before the old one gets its stop signal.
func TestMemoryRecycling(t *testing.T) {
	cfg := fastConfig(2)
	cfg.MaxMemory = 100 << 20
	var mu sync.Mutex
	fat := 0
	ts := runSup(t, cfg, good, func(ts *testSup) {
		ts.s.usage = func(p process) (int64, float64) {
			mu.Lock()
			defer mu.Unlock()
			if p.pid() == fat {
				return 200 << 20, 1
			}
			return 10 << 20, 1
		}
	})
	st := ts.waitServing(1, 2)
	mu.Lock()
	fat = st.Workers[1].PID
	mu.Unlock()
	st = ts.waitFor("slot 1 replaced", func(st Status) bool {
		return len(st.Workers) == 2 && countState(st, 1, Ready) == 2 && st.Workers[1].PID != fat
	})
	if st.Counters.Restarts["memory"] != 1 || st.Workers[1].Restarts != 1 || st.Workers[0].Restarts != 0 {
		t.Errorf("after recycling: %+v", st)
	}
	ev := ts.f.events()
	if i, j := indexOf(ev, "start g1 s1"), indexOf(ev, "signal g1 s1 SIGTERM"); i < 0 || j < 0 {
		t.Fatalf("events:\n%s", strings.Join(ev, "\n"))
	}
	// The replacement was ready before the old worker was signalled (the
	// fake records "ready" before it sends READY=1, so the supervisor
	// cannot have seen it earlier).
	readies := 0
	for _, e := range ev {
		if e == "ready g1 s1" {
			readies++
		}
		if strings.HasPrefix(e, "signal g1 s1 SIGTERM") && readies < 2 {
			t.Errorf("old worker stopped before its replacement was ready:\n%s", strings.Join(ev, "\n"))
		}
	}
}
