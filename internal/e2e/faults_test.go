//go:build linux

package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// The fault rules of the supervisor, end to end with real processes.

// Ready is not healthy: a release whose workers send READY=1 and exit
// 300 ms later (gunicorn without --preload, when the app fails to import)
// fails its reload during probation; reload --wait exits 1 naming the
// cause, and the old version answers every request throughout.
func TestFaultReadyThenExitFailsReload(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := script(t, dir, "good", "exec "+bin.testapp+" -mode serve")
	bad := script(t, dir, "bad", "exec "+bin.testapp+" -mode ready-exit -exit-after 300ms")
	install(t, good, app)
	m := startMaster(t, []string{"--workers", "2"}, app)
	before := m.waitServing(1, 2)
	l := startLoad(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	install(t, bad, app)
	stdout, stderr, code := m.cli("reload", "--wait")
	if code != 1 || !strings.Contains(stderr, "exited with status 1") || !strings.Contains(stderr, "after ready") {
		t.Fatalf("reload --wait: exit %d, stdout %q, stderr %q; want 1 and the cause", code, stdout, stderr)
	}
	st := m.waitServing(1, 2)
	for i, w := range st.Workers {
		if w.PID != before.Workers[i].PID || w.Restarts != 0 {
			t.Fatalf("old generation disturbed: %+v, before %+v", st.Workers, before.Workers)
		}
	}
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load stalled after the rollback")
	}
	fails := l.stop()
	t.Logf("%d requests, %d failed", l.total.Load(), len(fails))
	if len(fails) > 0 {
		t.Fatalf("%d requests failed:\n%s", len(fails), summarize(fails))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.seen {
		if a.version != "test" {
			t.Fatalf("an answer came from %q", a.version)
		}
	}
}

// Outside kills must not become an outage: kill -9 of a random ready
// worker every 300 ms for 20 s under load refuses no connection, no slot
// ever backs off, and all slots are ready within 2 s of the last kill.
func TestFaultKillStorm(t *testing.T) {
	storm := 20 * time.Second
	if testing.Short() {
		storm = 5 * time.Second
	}
	m := startMaster(t, []string{"--workers", "4"}, bin.hello1)
	m.waitServing(1, 4)
	l := startLoad(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	kills := 0
	end := time.Now().Add(storm)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	var last time.Time
	for time.Now().Before(end) {
		<-tick.C
		st, err := m.status()
		if err != nil {
			t.Fatal(err)
		}
		var ready []int
		for _, w := range st.Workers {
			if w.State == workers.Backoff {
				t.Fatalf("slot %d backed off during the storm: %+v", w.Slot, st.Workers)
			}
			if w.State == workers.Ready {
				ready = append(ready, w.PID)
			}
		}
		if len(ready) == 0 {
			continue
		}
		if err := syscall.Kill(ready[rand.IntN(len(ready))], syscall.SIGKILL); err == nil {
			kills++
			last = time.Now()
		}
	}
	st := m.waitServing(1, 4)
	after := time.Since(last)
	if after > 2*time.Second {
		t.Errorf("all slots ready %v after the last kill, want within 2s", after.Round(time.Millisecond))
	}
	restarts := 0
	for _, w := range st.Workers {
		restarts += w.Restarts
	}
	fails := l.stop()
	refused := 0
	for _, f := range fails {
		if strings.Contains(f, "connection refused") {
			refused++
		}
	}
	t.Logf("%d kills, %d restarts, %d requests, %d failed (requests in flight on a killed worker), %d refused; all slots ready %v after the last kill",
		kills, restarts, l.total.Load(), len(fails), refused, after.Round(time.Millisecond))
	if refused > 0 {
		t.Fatalf("%d connections refused:\n%s", refused, summarize(fails))
	}
	if restarts < kills/2 {
		t.Errorf("%d restarts for %d kills", restarts, kills)
	}
	if n := m.log.count("restarting after backoff"); n > 0 {
		t.Errorf("%d backoffs during the storm", n)
	}
}

// processAlive reports whether pid runs (not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest != "" && rest[0] != 'Z'
}

// A worker's whole process tree goes with it: a worker that started a
// helper holding the listening socket (one that accepts and never
// answers, and ignores SIGTERM) leaves nothing behind after a reload
// (only the new version answers) and after stop (the port is free).
func TestFaultHelperProcessTree(t *testing.T) {
	t.Parallel()
	t.Run("reload", func(t *testing.T) {
		dir := t.TempDir()
		pids := filepath.Join(dir, "helpers")
		// Only generation 1 starts helpers: after the reload, any
		// connection left unanswered is one a helper of generation 1
		// took.
		app := script(t, dir, "app", `if [ "$HANDOFF_GENERATION" = 1 ]; then `+bin.testapp+" -mode hold & echo $! >> "+pids+"; fi; exec "+bin.testapp+" -mode serve")
		m := startMaster(t, []string{"--workers", "2", "--drain-timeout", "2s"}, app)
		m.waitServing(1, 2)
		first := readPids(t, pids, 2)
		if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
			t.Fatalf("reload: exit %d %s%s", code, stdout, stderr)
		}
		m.waitServing(2, 2)
		for _, pid := range first {
			if processAlive(pid) {
				t.Errorf("generation 1's helper %d survived the reload", pid)
			}
		}
		addr := m.addr()
		for i := 0; i < 40; i++ {
			body, err := get(addr, "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if g := field(body, "generation"); g != "2" {
				t.Fatalf("answer from generation %s: %q", g, body)
			}
		}
	})
	t.Run("stop", func(t *testing.T) {
		dir := t.TempDir()
		pids := filepath.Join(dir, "helpers")
		app := script(t, dir, "app", bin.testapp+" -mode hold & echo $! >> "+pids+"; exec "+bin.testapp+" -mode serve")
		m := startMaster(t, []string{"--workers", "2", "--drain-timeout", "2s"}, app)
		m.waitServing(1, 2)
		helpers := readPids(t, pids, 2)
		addr := m.addr()
		m.cmd.Process.Signal(syscall.SIGTERM)
		if code := m.waitExit(30 * time.Second); code != 0 {
			t.Fatalf("master exit %d", code)
		}
		for _, pid := range helpers {
			if processAlive(pid) {
				t.Errorf("helper %d survived the stop", pid)
			}
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port still held after stop: %v", err)
		}
		ln.Close()
	})
}

// readPids waits until path lists n pids.
func readPids(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		if len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %v, want %d pids", path, out, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The same with a helper that leaves the worker's process group
// (setsid): only a cgroup catches it, so this runs where the master can
// make cgroups (as root, or delegated).
func TestFaultSetsidHelperNeedsCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		skipf(t, "needs root to make cgroups for workers")
	}
	dir := t.TempDir()
	pids := filepath.Join(dir, "helpers")
	app := script(t, dir, "app", "setsid sh -c 'echo $$ >> "+pids+"; exec "+bin.testapp+" -mode hold' & exec "+bin.testapp+" -mode serve")
	m := startMaster(t, []string{"--workers", "1", "--drain-timeout", "2s"}, app)
	m.waitServing(1, 1)
	if strings.Contains(m.log.String(), "worker trees are process groups") {
		skipf(t, "no cgroups here: %s", m.log.String())
	}
	addr := m.addr()
	helpers := readPids(t, pids, 1)
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(30 * time.Second)
	for _, pid := range helpers {
		if processAlive(pid) {
			t.Errorf("setsid helper %d survived the stop", pid)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still held after stop: %v", err)
	}
	ln.Close()
}

// A deploy by mv whose release is rolled back leaves the broken file at
// the command's path; a worker of the serving generation that is then
// killed restarts from the file its generation started with, not from
// what is on disk now.
func TestRolledBackMvDeployRestartsServingVersion(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	copyFile(t, bin.hello1, app)
	m := startMaster(t, []string{"--workers", "2"}, app)
	st := m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 4)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	broken := filepath.Join(dir, "app.new")
	copyFile(t, "/bin/false", broken)
	if err := os.Rename(broken, app); err != nil {
		t.Fatal(err)
	}
	if _, _, code := m.cli("reload", "--wait"); code != 1 {
		t.Fatalf("reload of a broken release: exit %d, want 1 (rolled back)", code)
	}
	victim := workerPID(st, 1, 0)
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = m.replacedIn(1, 0, victim, 20*time.Second)
	if n := st.Counters.Restarts["failed"]; n != 0 {
		t.Errorf("the replacement failed %d times: it ran the file now at the path", n)
	}
	for i := 0; i < 20; i++ {
		body, err := get(m.addr(), "/")
		if err != nil {
			t.Fatal(err)
		}
		if v := field(body, "version"); v != "v1" {
			t.Fatalf("answer from version %q, want v1", v)
		}
	}
	if fails := l.stop(); len(fails) > 4 {
		t.Errorf("%d requests failed, more than the 4 clients could have had on the killed worker:\n%s", len(fails), summarize(fails))
	}
}

// copyFile copies an executable.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
