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
		// Every ready worker, and only those, answers: the last 50
		// answers come from exactly s.want workers once the load has
		// spread. On a busy machine a worker whose queue stalls for a
		// moment is steered away from (liveness), so the test waits for
		// more answers rather than judging the first 50.
		var pids map[string]bool
		for try := 0; ; try++ {
			pids = lastPids(l, 50)
			if len(pids) == s.want {
				break
			}
			if try == 20 || !l.waitRequests(50, 20*time.Second) {
				t.Errorf("%d workers, but the last 50 answers came from %d: %v (status %+v)", s.want, len(pids), pids, st.Workers)
				break
			}
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

// lastPids are the workers that sent the last n answers l saw.
func lastPids(l *load, n int) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	pids := map[string]bool{}
	for _, a := range l.seen[max(0, len(l.seen)-n):] {
		pids[field(a.body, "pid")] = true
	}
	return pids
}
