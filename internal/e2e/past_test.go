//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// statusEvents is 'handoff status --json' with the events it carries.
type statusEvents struct {
	workers.Status
	Events []history.Entry `json:"events"`
}

func (m *master) statusWithEvents() statusEvents {
	m.t.Helper()
	stdout, stderr, code := m.cli("status", "--json")
	var st statusEvents
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil {
		m.t.Fatalf("status --json: exit %d: %s%s", code, stdout, stderr)
	}
	return st
}

// findEvent returns the first event ok accepts.
func findEvent(es []history.Entry, ok func(history.Entry) bool) (history.Entry, bool) {
	for _, e := range es {
		if ok(e) {
			return e, true
		}
	}
	return history.Entry{}, false
}

func eventList(es []history.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %d %s gen %d slot %d pid %d ok %v %s", e.Seq, e.Kind, e.Generation, e.Slot, e.PID, e.OK, e.Reason)
	}
	return b.String()
}

// status --json carries the master's recent events: a worker killed
// from outside (with its slot and pid) and a reload with its outcome,
// whether or not anyone watched when they happened; top shows them.
func TestStatusEvents(t *testing.T) {
	t.Parallel()
	m := startMaster(t, []string{"--workers", "2"}, bin.hello1)
	st := m.waitServing(1, 2)
	victim := st.Workers[1]
	killWorker(t, m, victim.PID, 2)
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: exit %d: %s%s", code, stdout, stderr)
	}
	js := m.statusWithEvents()
	if _, ok := findEvent(js.Events, func(e history.Entry) bool {
		return e.Kind == history.KindKill && e.PID == victim.PID && e.Slot == victim.Slot && e.Reason == "killed"
	}); !ok {
		t.Errorf("no kill of pid %d (slot %d) among the events:%s", victim.PID, victim.Slot, eventList(js.Events))
	}
	if _, ok := findEvent(js.Events, func(e history.Entry) bool {
		return e.Kind == history.KindReload && e.Generation == 2 && e.OK && e.Duration > 0
	}); !ok {
		t.Errorf("no reload to generation 2 among the events:%s", eventList(js.Events))
	}
	stdout, stderr, code := m.cli("top", "--count", "1", "--plain")
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("kill: slot %d pid %d (killed)", victim.Slot, victim.PID)) ||
		!strings.Contains(stdout, "reload to generation 2 ok") {
		t.Errorf("top: exit %d, want the master's events:\n%s%s", code, stdout, stderr)
	}
}

// A master started through a symlink (/opt/handoff/current/bin/handoff
// with current -> releases/v1) and upgraded after the symlink was
// flipped runs the new release, and says so; the new master knows the
// reload before the upgrade and the old master's events.
func TestMasterUpgradeFollowsSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for rel, src := range map[string]string{"v1": bin.handoff, "v2": bin.handoff2} {
		if err := os.MkdirAll(filepath.Join(dir, "releases", rel, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		install(t, src, filepath.Join(dir, "releases", rel, "bin", "handoff"))
	}
	current := filepath.Join(dir, "current")
	if err := os.Symlink("releases/v1", current); err != nil {
		t.Fatal(err)
	}
	m := startMasterWith(t, filepath.Join(current, "bin", "handoff"), nil, []string{"--workers", "2"}, bin.hello1)
	before := m.waitServing(1, 2)
	if before.Version == "two" {
		t.Fatalf("the first release says it is %q", before.Version)
	}
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: exit %d: %s%s", code, stdout, stderr)
	}

	// Flip current to the new release, as a deployment does, and
	// upgrade the master.
	if err := os.Symlink("releases/v2", current+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(current+".new", current); err != nil {
		t.Fatal(err)
	}
	m.handsOver = true
	stdout, stderr, code := m.cli("reload", "--wait", "--master")
	if code != 0 {
		t.Fatalf("reload --master: exit %d: %s%s", code, stdout, stderr)
	}
	st := m.waitStatus(60*time.Second, "a new master serving", func(st workers.Status) bool {
		return st.PID != before.PID && st.Serving && st.Generation == 3 && countState(st, 3, workers.Ready) == 2 && len(st.Workers) == 2
	})
	t.Cleanup(func() { stopPid(st.PID) })
	if st.Version != "two" {
		t.Errorf("the new master runs version %q, want the flipped release's %q", st.Version, "two")
	}
	if !strings.Contains(stdout, "handoff two") {
		t.Errorf("reload --master says:\n%s\nwant it to name the version now running (two)", stdout)
	}
	if r := st.LastReload; r == nil || r.Generation != 2 || !r.OK || r.Master {
		t.Errorf("the new master's last reload: %+v, want the reload to generation 2 before the upgrade", r)
	}
	text, _, _ := m.cli("status")
	if !strings.Contains(text, "(handoff two)") || !strings.Contains(text, "last reload: generation 2, ok") {
		t.Errorf("status:\n%s", text)
	}
	js := m.statusWithEvents()
	reload, ok1 := findEvent(js.Events, func(e history.Entry) bool { return e.Kind == history.KindReload && e.Generation == 2 && e.OK })
	took, ok2 := findEvent(js.Events, func(e history.Entry) bool { return e.Kind == history.KindTookOver && e.Generation == 3 })
	if !ok1 || !ok2 || reload.Seq >= took.Seq || !strings.Contains(took.Reason, fmt.Sprint(before.PID)) {
		t.Errorf("events of the new master: want the old master's reload to generation 2, then took-over from pid %d:%s", before.PID, eventList(js.Events))
	}
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("old master exited %d", code)
	}
}
