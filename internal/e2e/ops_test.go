//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
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

// Operating handoff, end to end: memory recycling, config reloads,
// privileges, worker output.

// A worker that allocates past --max-memory is replaced, its replacement
// ready before it is retired, with no failed request.
func TestMaxMemoryRecyclesUnderLoad(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "alloc")
	m := startMaster(t, []string{"--workers", "2", "--max-memory", "100MiB"}, bin.testapp, "-mode", "alloc", "-alloc", "200MiB", "-gate", trigger)
	before := m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st := m.waitStatus(60*time.Second, "a worker replaced for its memory", func(st workers.Status) bool {
		return st.Counters.Restarts["memory"] == 1 && countState(st, 1, workers.Ready) == 2 && len(st.Workers) == 2
	})
	replaced := 0
	for i, w := range st.Workers {
		if w.PID != before.Workers[i].PID {
			replaced++
		}
	}
	if replaced != 1 {
		t.Errorf("%d workers replaced, want 1: %+v", replaced, st.Workers)
	}
	m.log.waitLine(t, time.Second, "worker replaced", "its memory")
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load stalled")
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
}

// replaceConfig puts a new config file in place, by rename.
func replaceConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// A reload re-reads the config file: a new worker count and new
// arguments take effect with no failed request; a broken file is
// rejected with its diagnostic while the running generation serves on.
func TestConfigReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "app.hcl")
	conf := func(workers int, mode string) string {
		return fmt.Sprintf(`command = [%q, "-mode", %q]
workers = %d
listen "http" { address = "tcp://127.0.0.1:0" }
min_uptime = "100ms"
`, bin.testapp, mode, workers)
	}
	replaceConfig(t, cfg, conf(2, "serve"))
	m := startMaster(t, []string{"--config", cfg})
	m.waitServing(1, 2)
	addr := m.addr()
	l := startStrictNew(addr, 4)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}

	replaceConfig(t, cfg, conf(3, "mixed"))
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: exit %d %s%s", code, stdout, stderr)
	}
	m.waitServing(2, 3)
	modes := map[string]bool{}
	for i := 0; i < 30; i++ {
		body, err := get(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		modes[field(body, "mode")] = true
		if g := field(body, "generation"); g != "2" {
			t.Fatalf("answer from generation %s after the reload", g)
		}
	}
	if !modes["cstyle"] || !modes["serve"] {
		t.Errorf("modes answering after the reload: %v, want both of -mode mixed's", modes)
	}

	// A broken file: rejected, with where and why.
	replaceConfig(t, cfg, conf(3, "serve")+"workers = \"many\"\n")
	_, stderr, code := m.cli("reload", "--wait")
	if code != 1 || !strings.Contains(stderr, "app.hcl:") {
		t.Fatalf("reload of a broken file: exit %d, stderr %q; want 1 naming the file and position", code, stderr)
	}
	replaceConfig(t, cfg, conf(0, "serve"))
	_, stderr, code = m.cli("reload", "--wait")
	if code != 1 || !strings.Contains(stderr, "app.hcl:2") || !strings.Contains(stderr, "workers") {
		t.Fatalf("reload with workers = 0: exit %d, stderr %q", code, stderr)
	}
	st := m.waitServing(2, 3)
	if st.LastReload == nil || !st.LastReload.OK || st.LastReload.Generation != 2 {
		t.Errorf("a rejected file touched the running generation: last reload %+v", st.LastReload)
	}
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load stalled")
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
}

// lowPort finds a free TCP port below 1024 on 127.0.0.1.
func lowPort(t *testing.T) string {
	t.Helper()
	for p := 1000; p > 600; p-- {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return ln.Addr().String()
		}
	}
	skipf(t, "no free port below 1024")
	return ""
}

// A master started as root holds a port below 1024 and runs its workers
// as nobody.
func TestWorkersAsNobodyOnLowPort(t *testing.T) {
	if os.Geteuid() != 0 {
		skipf(t, "needs root")
	}
	// nobody must be able to execute the worker's binary.
	dir, err := os.MkdirTemp("", "nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	app := filepath.Join(dir, "testapp")
	b, err := os.ReadFile(bin.testapp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(app, b, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := lowPort(t)
	m := startMaster(t, []string{"--listen", "http=tcp://" + addr, "--workers", "2", "--user", "nobody"}, app, "-mode", "serve")
	st := m.waitServing(1, 2)
	for _, w := range st.Workers {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.PID))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534") {
			t.Errorf("worker %d does not run as nobody:\n%s", w.PID, status)
		}
	}
	if body, err := get(addr, "/"); err != nil || field(body, "pid") == "" {
		t.Fatalf("GET %s: %q %v", addr, body, err)
	}
	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload as nobody: %s", stderr)
	}
}

// Worker output: prefixed lines, JSON lines (so that the master's stderr
// is all JSON under --log-format json), or the master's own stdout and
// stderr.
func TestWorkerOutputModes(t *testing.T) {
	dir := t.TempDir()
	app := script(t, dir, "app", `echo "hello from $HANDOFF_WORKER"; echo "oops from $HANDOFF_WORKER" >&2; exec `+bin.testapp+` -mode serve`)
	for _, mode := range []string{"prefix", "json", "inherit"} {
		t.Run(mode, func(t *testing.T) {
			flags := []string{"--workers", "2", "--worker-output", mode}
			if mode == "json" {
				flags = append(flags, "--log-format", "json")
			}
			m := startMaster(t, flags, app)
			m.waitServing(1, 2)
			switch mode {
			case "prefix":
				m.log.waitLine(t, 20*time.Second, "[slot 1 gen 1] hello from 1")
				m.log.waitLine(t, 20*time.Second, "[slot 0 gen 1] oops from 0")
			case "inherit":
				m.log.waitLine(t, 20*time.Second, "hello from 1")
				if n := m.log.count("[slot "); n > 0 {
					t.Errorf("%d prefixed lines with inherit", n)
				}
			case "json":
				m.log.waitLine(t, 20*time.Second, `"@message":"oops from 1"`, `"stream":"stderr"`, `"slot":1`)
				for _, line := range strings.Split(strings.TrimSpace(m.log.String()), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(line), &v); err != nil {
						t.Errorf("not a JSON line: %q", line)
					}
				}
			}
		})
	}
}

// What the master keeps follows a reload's outcome, not its client: a
// configuration reload that adds a listener, awaited by a client that
// gives up before probation ends, still commits the new listener when
// the generation serves (before, the master closed it as the client
// left, while generation 2 used it: "cannot steer connections: group
// closed"). Then a new worker is killed and the service reloaded again,
// all under strict load on both listeners.
func TestConfigReloadOutcomeOwnsListeners(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "app.hcl")
	httpAddr, apiAddr := freePort(t), freePort(t)
	conf := func(listeners ...string) string {
		s := fmt.Sprintf("command = [%q]\nworkers = 2\n", bin.hello1) // serves every listener
		for _, l := range listeners {
			s += l + "\n"
		}
		return s
	}
	httpL := fmt.Sprintf(`listen "http" { address = "tcp://%s" }`, httpAddr)
	apiL := fmt.Sprintf(`listen "api" { address = "tcp://%s" }`, apiAddr)
	replaceConfig(t, cfg, conf(httpL))
	m := startMaster(t, []string{"--config", cfg})
	m.waitServing(1, 2)
	l := startStrictNew(httpAddr, 4)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}

	replaceConfig(t, cfg, conf(httpL, apiL))
	if _, _, code := m.cli("reload", "--wait", "--timeout", "300ms"); code == 0 {
		t.Fatal("reload --wait --timeout 300ms succeeded before the 1s probation could end")
	}
	st := m.waitStatus(30*time.Second, "generation 2 serving after the client gave up", func(st workers.Status) bool {
		return st.LastReload != nil && st.LastReload.Generation == 2 && countState(st, 2, workers.Ready) == 2 && countState(st, 1, workers.Ready) == 0
	})
	if !st.LastReload.OK {
		t.Fatalf("reload failed: %+v", st.LastReload)
	}
	if n := len(st.Listeners); n != 2 {
		t.Fatalf("status lists %d listeners after the reload, want 2: %+v", n, st.Listeners)
	}
	for _, ls := range st.Listeners {
		if ls.Balance != "steer" {
			t.Errorf("listener %s: balance %q, want steer", ls.Name, ls.Balance)
		}
	}
	api := startStrictNew(apiAddr, 2)
	defer api.stop()
	if !api.waitRequests(100, 20*time.Second) {
		t.Fatal("the new listener is not getting answers")
	}

	// A new worker killed, then another reload: both listeners steered
	// to the replacement, then to generation 3. Only requests in flight
	// on the killed worker may fail (at most one per client), and none
	// before the kill or after the replacement is ready.
	for name, ld := range map[string]*load{"http": l, "api": api} {
		if fails := ld.failures(); len(fails) > 0 {
			t.Fatalf("%s: %d requests failed before the kill:\n%s", name, len(fails), summarize(fails))
		}
	}
	var victim int
	for _, w := range st.Workers {
		if w.Generation == 2 && w.State == workers.Ready {
			victim = w.PID
			break
		}
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.waitStatus(20*time.Second, "the killed worker replaced", func(st workers.Status) bool {
		if countState(st, 2, workers.Ready) != 2 {
			return false
		}
		for _, w := range st.Workers {
			if w.PID == victim {
				return false
			}
		}
		return true
	})
	atKill := map[*load]int{}
	for ld, clients := range map[*load]int{l: 4, api: 2} {
		n := len(ld.failures())
		if n > clients {
			t.Errorf("%d requests failed at the kill, more than the %d clients could have had in flight on the killed worker:\n%s", n, clients, summarize(ld.failures()))
		}
		atKill[ld] = n
	}
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("second reload: exit %d %s%s", code, stdout, stderr)
	}
	m.waitServing(3, 2)
	if !l.waitRequests(100, 20*time.Second) || !api.waitRequests(100, 20*time.Second) {
		t.Fatal("load stalled after the second reload")
	}
	for name, ld := range map[string]*load{"http": l, "api": api} {
		if fails := ld.stop(); len(fails) > atKill[ld] {
			t.Errorf("%s: %d of %d requests failed after the replacement was ready:\n%s", name, len(fails)-atKill[ld], ld.total.Load(), summarize(fails[atKill[ld]:]))
		}
	}
	if n := m.log.count("cannot steer"); n > 0 {
		t.Errorf("the master logged %d steering errors", n)
	}
}

// A worker runs as the master's user here (no --user), and still cannot
// drive the master: its control requests are refused, for its own process
// and for a child of it.
func TestWorkerControlRequestRefused(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	script := fmt.Sprintf(`%s scale 3 --control "$CTL" >%s.main 2>&1; echo "exit $?" >>%s.main
sh -c '%s stop --control "$CTL"' >%s.child 2>&1; echo "exit $?" >>%s.child
exec sleep 600`, bin.handoff, out, out, bin.handoff, out, out)
	ctlDir, err := os.MkdirTemp("", "hw-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ctlDir)
	ctl := filepath.Join(ctlDir, "ctl.sock")
	m := startMasterWith(t, bin.handoff, []string{"CTL=" + ctl}, []string{"--control", ctl, "--workers", "1", "--ready", "delay=100ms", "--listen", "http=tcp://127.0.0.1:0"}, "/bin/sh", "-c", script)
	m.ctl = ctl
	m.waitServing(1, 1)
	for _, f := range []string{out + ".main", out + ".child"} {
		var b []byte
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(string(b), "exit ") && time.Now().Before(deadline) {
			b, _ = os.ReadFile(f)
			time.Sleep(20 * time.Millisecond)
		}
		got := string(b)
		if !strings.Contains(got, "belongs to a worker") || strings.Contains(got, "exit 0") {
			t.Errorf("%s: %q, want a refusal naming the worker and a non-zero exit", filepath.Base(f), got)
		}
	}
	st := m.waitServing(1, 1)
	if st.Phase != workers.MasterServing || len(st.Workers) != 1 {
		t.Errorf("a worker's request changed the master: %+v", st)
	}
	// The owner, outside the worker tree, still gets through.
	if _, stderr, code := m.cli("status"); code != 0 {
		t.Errorf("status from the owner: exit %d %s", code, stderr)
	}
}
