//go:build linux

package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// Scaling up and down under load (SIGTTIN and SIGTTOU, as Unicorn and
// einhorn take them) fails no request: new workers are ready-checked
// before they get connections, removed ones are steered away from and
// drained.
func TestScaleUnderLoadBySignals(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "serve")
	m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 4)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	steps := []struct {
		sig  syscall.Signal
		want int
	}{
		{syscall.SIGTTIN, 3}, {syscall.SIGTTIN, 4}, {syscall.SIGTTOU, 3}, {syscall.SIGTTOU, 2}, {syscall.SIGTTOU, 1}, {syscall.SIGTTIN, 2},
	}
	for _, s := range steps {
		if err := m.cmd.Process.Signal(s.sig); err != nil {
			t.Fatal(err)
		}
		st := m.waitServing(1, s.want)
		if !l.waitRequests(100, 20*time.Second) {
			t.Fatalf("load stalled at %d workers", s.want)
		}
		pids := map[string]bool{}
		l.mu.Lock()
		for _, a := range l.seen[len(l.seen)-50:] {
			pids[field(a.body, "pid")] = true
		}
		l.mu.Unlock()
		if len(pids) != s.want {
			t.Errorf("%d workers, but the last 50 answers came from %d: %v (status %+v)", s.want, len(pids), pids, st.Workers)
		}
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	// A reload keeps the scaled count.
	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatal(stderr)
	}
	m.waitStatus(60*time.Second, "generation 2 with 2 workers", func(st workers.Status) bool {
		return st.Generation == 2 && countState(st, 2, workers.Ready) == 2 && len(st.Workers) == 2
	})
}
