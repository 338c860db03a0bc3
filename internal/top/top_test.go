package top

import (
	"context"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func status(pid int, ws ...workers.WorkerStatus) workers.Status {
	return workers.Status{PID: pid, Started: t0, Phase: workers.MasterServing, Generation: 1, Serving: true,
		Generations: []workers.GenerationStatus{{Generation: 1, Phase: workers.GenServing}}, Workers: ws}
}

// CPU percentages come from the CPU seconds of two polls, per pid.
func TestTrackerCPU(t *testing.T) {
	tr := NewTracker(nil)
	tr.Update(status(1, workers.WorkerStatus{PID: 10, CPU: 1}), t0)
	if _, ok := tr.CPU(10); ok {
		t.Fatal("a CPU percentage from one poll")
	}
	tr.Update(status(1, workers.WorkerStatus{PID: 10, CPU: 1.5}), t0.Add(time.Second))
	if c, ok := tr.CPU(10); !ok || c < 49.9 || c > 50.1 {
		t.Fatalf("CPU = %v %v, want 50%%", c, ok)
	}
}

// Events: reload phases and outcomes, restarts by reason, replaced pids,
// a new master.
func TestTrackerEvents(t *testing.T) {
	tr := NewTracker(func(s string) string { return strings.ReplaceAll(s, "\x1b", `\x1b`) })
	a := status(1, workers.WorkerStatus{Slot: 0, PID: 10, Generation: 1, State: workers.Ready})
	tr.Update(a, t0)
	b := status(1, workers.WorkerStatus{Slot: 0, PID: 11, Generation: 1, State: workers.Ready})
	b.Counters.Restarts = map[string]int{"killed": 1}
	b.Rollover = &workers.RolloverStatus{Generation: 2, Phase: workers.RollStarting, Workers: 1}
	tr.Update(b, t0.Add(time.Second))
	c := status(2, workers.WorkerStatus{Slot: 0, PID: 11, Generation: 1, State: workers.Ready})
	c.Version = "v9"
	c.LastReload = &workers.ReloadResult{Generation: 2, Error: "worker 0 said \x1b[31m", Started: t0}
	tr.Update(c, t0.Add(2*time.Second))
	var got []string
	for _, e := range tr.Events() {
		got = append(got, e.Text)
	}
	want := []string{
		"reload to generation 2: starting",
		"1 worker restart(s): killed",
		"slot 0: pid 10 replaced by 11",
		"master upgraded: pid 1 → 2 (version v9)",
		`reload to generation 2 rolled back: worker 0 said \x1b[31m`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A reload's progress: new workers ready of N, the probation left, old
// workers retired of those there were when it was first seen.
func TestProgress(t *testing.T) {
	var p Progress
	st := status(1,
		workers.WorkerStatus{Slot: 0, PID: 10, Generation: 1, State: workers.Ready},
		workers.WorkerStatus{Slot: 1, PID: 11, Generation: 1, State: workers.Ready},
		workers.WorkerStatus{Slot: 0, PID: 20, Generation: 2, State: workers.Ready},
		workers.WorkerStatus{Slot: 1, PID: 21, Generation: 2, State: workers.Starting})
	st.Rollover = &workers.RolloverStatus{Generation: 2, Phase: workers.RollStarting, Workers: 2}
	if s, ok := p.Step(st, t0); !ok || s.String() != "starting 1/2 ready" {
		t.Fatalf("%v %q", ok, s)
	}
	st.Workers[3].State = workers.Ready
	st.Rollover.Phase, st.Rollover.ProbationEnds = workers.RollProbation, t0.Add(400*time.Millisecond)
	if s, _ := p.Step(st, t0); s.String() != "probation 0.4 s left" {
		t.Fatalf("%q", s)
	}
	st.Workers = st.Workers[1:]
	st.Rollover.Phase = workers.RollRetiring
	if s, _ := p.Step(st, t0); s.String() != "retiring 1/2" {
		t.Fatalf("%q", s)
	}
	st.Rollover = nil
	if _, ok := p.Step(st, t0); ok {
		t.Fatal("progress without a rollover")
	}
}

// The master's strings reach the view escaped.
func TestRenderEscapes(t *testing.T) {
	tr := NewTracker(func(s string) string { return strings.ReplaceAll(s, "\x1b", `\x1b`) })
	st := status(1, workers.WorkerStatus{PID: 10, Generation: 1, State: workers.Ready, Away: "queue \x1b[2J stuck"})
	st.Listeners = []workers.ListenerStatus{{Name: "h\x1b]0;x", Network: "tcp", Addr: "1:2", Balance: "steer"}}
	tr.Update(st, t0)
	out := Render(st, tr, t0)
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `queue \x1b[2J stuck`) || !strings.Contains(out, "ready (away)") {
		t.Fatalf("view:\n%q", out)
	}
	// A rolled-back reload shows its failed worker's last stderr lines.
	st.LastReload = &workers.ReloadResult{Generation: 2, Error: "slot 0: exited with status 1 before ready", FailedPID: 42, Stderr: []string{"loading", "boom: \x1b[31mmissing module"}}
	out = Render(st, tr, t0)
	if want := "  the last lines worker 42 wrote to stderr:\n    loading\n    boom: \\x1b[31mmissing module\n"; strings.Contains(out, "\x1b") || !strings.Contains(out, want) {
		t.Fatalf("view lacks %q:\n%q", want, out)
	}
}

// q quits; a resize sets the size the view is cut to.
func TestModelKeysAndResize(t *testing.T) {
	m := &model{o: Options{Fetch: func(context.Context) (Status, error) { return Status{Status: status(1)}, nil }}, t: NewTracker(nil)}
	m.Update(statusMsg{st: Status{Status: status(1, workers.WorkerStatus{PID: 10, Generation: 1, State: workers.Ready})}, at: t0})
	m.Update(tea.WindowSizeMsg{Width: 20, Height: 3})
	for i, line := range strings.Split(m.View(), "\n") {
		if i >= 3 || len([]rune(line)) > 20 {
			t.Fatalf("view not cut to 20x3:\n%s", m.View())
		}
	}
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	if cmd == nil {
		t.Fatal("q does nothing")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Fatal("q does not quit")
	}
}

// The master's own events, when it sends them, are the ones shown: the
// newest maxEvents, its strings escaped, including what happened before
// the first poll.
func TestTrackerMasterEvents(t *testing.T) {
	tr := NewTracker(func(s string) string { return strings.ReplaceAll(s, "\x1b", `\x1b`) })
	es := []history.Entry{{Kind: history.KindServing, Generation: 1, Slot: -1, Time: t0}}
	for i := range maxEvents {
		es = append(es, history.Entry{Kind: history.KindRestart, Generation: 1, Slot: 0, PID: 100 + i, Reason: "exited", Time: t0})
	}
	es = append(es,
		history.Entry{Kind: history.KindKill, Generation: 1, Slot: 1, PID: 12, Reason: "killed", Time: t0},
		history.Entry{Kind: history.KindReload, Generation: 2, Slot: -1, OK: true, Duration: 1500 * time.Millisecond, Time: t0},
		history.Entry{Kind: history.KindUpgrade, Generation: 3, Slot: -1, Reason: "new master said \x1b[31m", Time: t0},
		history.Entry{Kind: history.KindTookOver, Generation: 4, Slot: -1, Reason: "from pid 7", Time: t0.Add(time.Second)})
	tr.Update(status(1), t0)
	tr.MasterEvents(es)
	got := tr.Events()
	if len(got) != maxEvents {
		t.Fatalf("%d events, want the newest %d", len(got), maxEvents)
	}
	var last []string
	for _, e := range got[maxEvents-4:] {
		last = append(last, e.Text)
	}
	want := []string{
		"kill: slot 1 pid 12 (killed)",
		"reload to generation 2 ok in 1.5s",
		`master upgrade to generation 3 rolled back: new master said \x1b[31m`,
		"took over from pid 7 with generation 4",
	}
	if strings.Join(last, "\n") != strings.Join(want, "\n") || !got[maxEvents-1].At.Equal(t0.Add(time.Second)) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(last, "\n"), strings.Join(want, "\n"))
	}
	if out := Render(status(1), tr, t0); !strings.Contains(out, "reload to generation 2 ok in 1.5s") {
		t.Errorf("view:\n%s", out)
	}
	// A reload's phases, which the polls see, join them in time order.
	b := status(1)
	b.Rollover = &workers.RolloverStatus{Generation: 5, Phase: workers.RollStarting, Workers: 1}
	tr.Update(b, t0.Add(2*time.Second))
	if got := tr.Events(); len(got) != maxEvents || got[maxEvents-1].Text != "reload to generation 5: starting" || got[maxEvents-2].Text != "took over from pid 7 with generation 4" {
		t.Errorf("events with a phase: %+v", got)
	}
	// A master that sends none: the events derived from the polls.
	tr.MasterEvents(nil)
	if got := tr.Events(); len(got) != 1 || got[0].Text != "reload to generation 5: starting" {
		t.Errorf("events of an older master: %+v", got)
	}
}
