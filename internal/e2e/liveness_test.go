//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// workerPID returns the pid of generation gen's worker in slot.
func workerPID(st workers.Status, gen, slot int) int {
	for _, w := range st.Workers {
		if w.Generation == gen && w.Slot == slot && w.State == workers.Ready {
			return w.PID
		}
	}
	return 0
}

// replacedIn waits until slot of generation gen runs a ready worker other
// than pid, and returns the status then.
func (m *master) replacedIn(gen, slot, pid int, timeout time.Duration) workers.Status {
	return m.waitStatus(timeout, "the worker replaced", func(st workers.Status) bool {
		p := workerPID(st, gen, slot)
		return p != 0 && p != pid && countState(st, gen, workers.Ready) == len(st.Workers)
	})
}

// A worker stopped with SIGSTOP under strict load is steered away from
// once its queue stops moving, then replaced after --hang-timeout; the
// replacement answers the connections that waited in its socket, so no
// request fails but those the worker had accepted before it stopped.
func TestHungWorkerSteeredAwayAndReplaced(t *testing.T) {
	m := startMaster(t, []string{"--workers", "4", "--hang-timeout", "2s"}, bin.testapp)
	st := m.waitServing(1, 4)
	l := startStrictNew(m.addr(), 8)
	defer l.stop()
	if !l.waitRequests(200, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	victim := workerPID(st, 1, 1)
	if err := syscall.Kill(victim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(victim, syscall.SIGCONT) // if the test fails before the kill
	m.waitStatus(20*time.Second, "the stopped worker steered away from", func(st workers.Status) bool {
		for _, w := range st.Workers {
			if w.PID == victim && w.Away != "" {
				return true
			}
		}
		return false
	})
	st = m.replacedIn(1, 1, victim, 30*time.Second)
	if st.Counters.Restarts["hung"] != 1 {
		t.Errorf("restarts %v, want one hung", st.Counters.Restarts)
	}
	if !l.waitRequests(200, 20*time.Second) {
		t.Fatal("load stalled after the replacement")
	}
	// Only what the stopped worker had accepted and not answered is lost
	// with it (at most one connection per client); what waited in its
	// socket is the replacement's.
	if fails := l.stop(); len(fails) > 8 {
		t.Errorf("%d of %d requests failed, more than the 8 clients could have had in the stopped worker's hands:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	if m.log.count("worker does not serve, replacing it") != 1 {
		t.Errorf("the log does not say once why the worker was replaced")
	}
}

// A worker that stops sending WATCHDOG=1 is replaced, as systemd restarts
// a service whose watchdog fired, with no failed request under load.
func TestWatchdogReplacesSilentWorker(t *testing.T) {
	dir := t.TempDir()
	stop := filepath.Join(dir, "wd")
	m := startMaster(t, []string{"--workers", "2", "--watchdog", "600ms"}, bin.testapp, "-watchdog-stop", stop)
	st := m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 4)
	defer l.stop()
	if !l.waitRequests(200, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	// The pings keep a worker alive well past its watchdog interval.
	for i := 0; i < 3; i++ {
		if !l.waitRequests(100, 20*time.Second) {
			t.Fatal("load stalled")
		}
	}
	if st2, _ := m.status(); st2.Counters.Restarts["watchdog"] != 0 {
		t.Fatalf("a pinging worker was replaced: %v", st2.Counters.Restarts)
	}
	victim := workerPID(st, 1, 0)
	if err := os.WriteFile(stop+"."+strconv.Itoa(victim), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st = m.replacedIn(1, 0, victim, 20*time.Second)
	if st.Counters.Restarts["watchdog"] != 1 {
		t.Errorf("restarts %v, want one watchdog", st.Counters.Restarts)
	}
	if !l.waitRequests(200, 20*time.Second) {
		t.Fatal("load stalled after the replacement")
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Errorf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
}

// A worker whose health check fails is steered away from at the first
// failure, with no failed request, and gets connections again once it
// answers; enough failures in a row replace it.
func TestHealthSteersAwayAndBack(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "sick")
	m := startMaster(t, []string{"--workers", "2", "--health", "http=/healthz", "--health-interval", "100ms", "--health-failures", "1024"}, bin.testapp, "-unhealthy", bad)
	st := m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 4)
	defer l.stop()
	if !l.waitRequests(200, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	victim := workerPID(st, 1, 1)
	sick := bad + "." + strconv.Itoa(victim)
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m.waitStatus(20*time.Second, "the unhealthy worker steered away from", func(st workers.Status) bool {
		for _, w := range st.Workers {
			if w.PID == victim && w.Away != "" {
				return true
			}
		}
		return false
	})
	// While it is away, every answer comes from the other worker.
	since := time.Now()
	if !l.waitRequests(300, 20*time.Second) {
		t.Fatal("load stalled while a worker was away")
	}
	for _, a := range l.answersAfter(since.Add(100 * time.Millisecond)) {
		if field(a.body, "pid") == strconv.Itoa(victim) {
			t.Fatalf("the worker steered away from answered a new connection: %q", a.body)
		}
	}
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	m.waitStatus(20*time.Second, "the worker back", func(st workers.Status) bool {
		for _, w := range st.Workers {
			if w.PID == victim && w.Away == "" {
				return true
			}
		}
		return false
	})
	if fails := l.stop(); len(fails) > 0 {
		t.Errorf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	if st, _ := m.status(); st.Counters.Restarts["unhealthy"] != 0 || workerPID(st, 1, 1) != victim {
		t.Errorf("the worker was replaced, not steered back: %+v", st)
	}

	// Failures in a row replace it.
	m2 := startMaster(t, []string{"--workers", "2", "--health", "http=/healthz", "--health-interval", "100ms", "--health-failures", "3"}, bin.testapp, "-unhealthy", bad)
	st = m2.waitServing(1, 2)
	victim = workerPID(st, 1, 0)
	if err := os.WriteFile(bad+"."+strconv.Itoa(victim), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st = m2.replacedIn(1, 0, victim, 20*time.Second)
	if st.Counters.Restarts["unhealthy"] != 1 {
		t.Errorf("restarts %v, want one unhealthy", st.Counters.Restarts)
	}
}
