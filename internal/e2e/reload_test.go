//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// install puts src at dst the way a deploy does: write next to it, then
// rename over it, so running processes keep the old file.
func install(t *testing.T, src, dst string) {
	t.Helper()
	tmp := dst + ".new"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		b, rerr := os.ReadFile(src)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// Twenty reloads under constant load, alternating v1 and v2 swapped in by
// rename: no request fails, not even for a client that never retries, and
// once 'reload --wait' returns every answer comes from the new version.
func TestReloadZeroDowntimeUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	install(t, bin.hello1, app)
	// A short probation: 20 reloads, each waiting it out, is what the
	// test is not about.
	m := startMaster(t, []string{"--workers", "2", "--log-level", "info", "--min-uptime", "100ms"}, app)
	m.waitServing(1, 2)
	l := startLoad(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	reloads := 20
	if testing.Short() {
		reloads = 6
	}
	for i := 1; i <= reloads; i++ {
		src, version := bin.hello2, "v2"
		if i%2 == 0 {
			src, version = bin.hello1, "v1"
		}
		install(t, src, app)
		stdout, stderr, code := m.cli("reload", "--wait", "--timeout", "60s")
		if code != 0 {
			t.Fatalf("reload %d: exit %d: %s%s", i, code, stdout, stderr)
		}
		done := time.Now()
		if !strings.Contains(stdout, fmt.Sprintf("generation %d serving", i+1)) {
			t.Fatalf("reload %d: output %q", i, stdout)
		}
		if !l.waitRequests(60, 20*time.Second) {
			t.Fatalf("reload %d: load stalled", i)
		}
		if stale := l.staleAfter(done, version); len(stale) > 0 {
			t.Fatalf("reload %d to %s: %d answers from the old version after reload --wait returned:\n%s", i, version, len(stale), summarize(stale))
		}
	}
	fails := l.stop()
	t.Logf("%d requests over %d reloads, %d failed", l.total.Load(), reloads, len(fails))
	if len(fails) > 0 {
		t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
	st := m.waitServing(reloads+1, 2)
	if st.LastReload == nil || !st.LastReload.OK {
		t.Fatalf("last reload: %+v", st.LastReload)
	}
}

// A release that exits at once, and one that never gets ready, are rolled
// back: the old generation serves on untouched, reload --wait exits 1
// naming the cause, and the next good release goes through.
func TestReloadRollback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	install(t, bin.hello1, app)
	crash := script(t, dir, "crash", `echo "broken build: missing config" >&2; exit 3`)
	hang := script(t, dir, "hang", `exec sleep 600`)

	m := startMaster(t, []string{"--workers", "2", "--ready-timeout", "2s"}, app)
	before := m.waitServing(1, 2)
	l := startLoad(m.addr(), 1)
	defer l.stop()
	if !l.waitRequests(50, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}

	for i, c := range []struct {
		src, cause string
		lines      int // of stderr: the error, then the worker's last stderr lines under it
	}{
		{crash, "exited with status 3 before ready", 3},
		{hang, "not ready within 2s", 1},
	} {
		gen := i + 2
		install(t, c.src, app)
		stdout, stderr, code := m.cli("reload", "--wait")
		if code != 1 {
			t.Fatalf("reload to %s: exit %d (stdout %q stderr %q), want 1", c.src, code, stdout, stderr)
		}
		first, _, _ := strings.Cut(stderr, "\n")
		if !strings.Contains(first, c.cause) || !strings.Contains(first, "slot ") || strings.Count(stderr, "\n") != c.lines {
			t.Fatalf("reload to %s: stderr %q should be %d lines, the first naming the slot and %q", c.src, stderr, c.lines, c.cause)
		}
		if c.src == crash && !strings.HasSuffix(stderr, "handoff: broken build: missing config\n") {
			t.Fatalf("reload to %s: stderr %q should end in the worker's last line", c.src, stderr)
		}
		st := m.waitServing(1, 2)
		if st.LastReload == nil || st.LastReload.OK || st.LastReload.Generation != gen || !strings.Contains(st.LastReload.Error, c.cause) {
			t.Fatalf("last_reload = %+v, want generation %d failed with %q", st.LastReload, gen, c.cause)
		}
		for j, w := range st.Workers {
			if w.PID != before.Workers[j].PID || w.Restarts != 0 {
				t.Fatalf("old generation was disturbed: %+v, before %+v", st.Workers, before.Workers)
			}
		}
		if !l.waitRequests(30, 20*time.Second) {
			t.Fatal("load stalled after the rollback")
		}
	}
	m.log.waitLine(t, time.Second, "reload failed, previous generation keeps serving")

	install(t, bin.hello2, app)
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("good reload after rollbacks: exit %d %s%s", code, stdout, stderr)
	}
	done := time.Now()
	st := m.waitServing(4, 2)
	if !st.LastReload.OK {
		t.Fatalf("last_reload = %+v", st.LastReload)
	}
	l.waitRequests(30, 20*time.Second)
	if stale := l.staleAfter(done, "v2"); len(stale) > 0 {
		t.Fatalf("stale answers after the good reload:\n%s", summarize(stale))
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d requests failed across the rollbacks:\n%s", len(fails), summarize(fails))
	}
}

// Ten SIGHUPs in a burst: rollovers never overlap and at most two run
// (the one started and one follow-up for the rest), with a config file
// (each reload reads it) as without.
func TestReloadSighupBurstCoalesces(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		sighupBurst(t, startMaster(t, []string{"--workers", "2"}, bin.hello1))
	})
	t.Run("config", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "app.hcl")
		replaceConfig(t, cfg, fmt.Sprintf("command = [%q]\nworkers = 2\nlisten \"http\" { address = \"tcp://127.0.0.1:0\" }\n", bin.hello1))
		sighupBurst(t, startMaster(t, []string{"--config", cfg}))
	})
}

func sighupBurst(t *testing.T, m *master) {
	m.waitServing(1, 2)
	for i := 0; i < 10; i++ {
		if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	m.log.waitLine(t, 30*time.Second, "reload done")
	st := m.waitStatus(60*time.Second, "no reload running or pending", func(st workers.Status) bool {
		return st.Reloading == 0 && !st.ReloadPending && st.LastReload != nil && len(st.Workers) == 2
	})
	var events []string
	for _, line := range strings.Split(m.log.String(), "\n") {
		switch {
		case strings.Contains(line, "reload started"):
			events = append(events, "start")
		case strings.Contains(line, "reload done"), strings.Contains(line, "reload failed"):
			events = append(events, "end")
		}
	}
	if len(events) < 2 || len(events) > 4 {
		t.Fatalf("reload events %v: want one or two rollovers", events)
	}
	for i, e := range events {
		if want := []string{"start", "end"}[i%2]; e != want {
			t.Fatalf("rollovers overlapped: %v", events)
		}
	}
	if want := 1 + len(events)/2; st.Generation != want {
		t.Fatalf("serving generation %d after %d rollovers", st.Generation, len(events)/2)
	}
}

// status --json reports each phase: starting, serving, reloading with the
// new generation starting, the old one draining, and the result.
func TestReloadStatusPhases(t *testing.T) {
	dir := t.TempDir()
	ready, release := filepath.Join(dir, "ready"), filepath.Join(dir, "release")
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "gate", "-gate", ready, "-gate-stop", release)

	st := m.waitStatus(20*time.Second, "two workers starting", func(st workers.Status) bool {
		return countState(st, 1, workers.Starting) == 2
	})
	if st.Serving || st.Generation != 1 || st.LastReload != nil {
		t.Fatalf("while starting: %+v", st)
	}
	os.WriteFile(ready, nil, 0o644)
	m.waitServing(1, 2)

	os.Remove(ready)
	if _, stderr, code := m.cli("reload"); code != 0 {
		t.Fatalf("reload: %s", stderr)
	}
	st = m.waitStatus(20*time.Second, "generation 2 starting next to 1", func(st workers.Status) bool {
		return countState(st, 2, workers.Starting) == 2 && countState(st, 1, workers.Ready) == 2
	})
	if st.Generation != 1 || st.Reloading != 2 {
		t.Fatalf("during the rollout: generation %d reloading %d", st.Generation, st.Reloading)
	}
	os.WriteFile(ready, nil, 0o644)
	// Draining starts when the worker is steered away from; the stop
	// signal (on which it sets STATUS=draining) follows once its queue
	// has been empty a moment.
	st = m.waitStatus(20*time.Second, "generation 2 serving, 1 draining after its stop signal", func(st workers.Status) bool {
		signalled := false
		for _, w := range st.Workers {
			signalled = signalled || w.Generation == 1 && w.State == workers.Draining && w.Status != ""
		}
		return countState(st, 2, workers.Ready) == 2 && countState(st, 1, workers.Draining) == 1 && signalled
	})
	if st.Generation != 2 || st.Reloading != 2 {
		t.Fatalf("while draining: generation %d reloading %d", st.Generation, st.Reloading)
	}
	for _, w := range st.Workers {
		if w.Generation == 1 && w.State == workers.Draining && !strings.HasPrefix(w.Status, "draining") {
			t.Fatalf("draining worker's STATUS = %q", w.Status)
		}
	}
	os.WriteFile(release, nil, 0o644)
	m.waitServing(2, 2)

	// The CLI's JSON carries the documented fields with the right types.
	stdout, stderr, code := m.cli("status", "--json")
	if code != 0 {
		t.Fatalf("status --json: %s", stderr)
	}
	var doc struct {
		Generation *int `json:"generation"`
		Workers    []struct {
			Slot, PID, Generation, Restarts *int
			State                           *string
		} `json:"workers"`
		LastReload *struct {
			Generation *int     `json:"generation"`
			OK         *bool    `json:"ok"`
			Error      *string  `json:"error"`
			DurationMS *float64 `json:"duration_ms"`
		} `json:"last_reload"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if doc.Generation == nil || *doc.Generation != 2 || len(doc.Workers) != 2 || doc.LastReload == nil ||
		doc.LastReload.OK == nil || !*doc.LastReload.OK || *doc.LastReload.Generation != 2 || *doc.LastReload.DurationMS <= 0 {
		t.Fatalf("status --json missing or wrong fields:\n%s", stdout)
	}
	for _, w := range doc.Workers {
		if w.Slot == nil || w.PID == nil || w.Generation == nil || w.Restarts == nil || w.State == nil || *w.State != "ready" {
			t.Fatalf("worker entry missing fields:\n%s", stdout)
		}
	}
	if !strings.Contains(stdout, `"error"`) {
		// An ok reload has an empty error: the field is still documented
		// as present so scripts need not test for it.
		t.Logf("note: ok reload omits error: %s", stdout)
	}

	// The table names the same.
	table, _, _ := m.cli("status")
	for _, want := range []string{"generation 2 serving", "SLOT", "ready", "last reload: generation 2, ok"} {
		if !strings.Contains(table, want) {
			t.Fatalf("status table lacks %q:\n%s", want, table)
		}
	}
}

// Malformed, truncated and huge requests on the control socket get an
// error reply; a peer of another user is refused; the master keeps serving.
func TestControlSocketBadRequests(t *testing.T) {
	m := startMaster(t, []string{"--workers", "1"}, bin.hello1)
	m.waitServing(1, 1)
	fi, err := os.Stat(m.ctl)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	cases := []struct {
		name, send string
		closeWrite bool
		want       string
	}{
		{"garbage", "\x00\xffnot json at all\n", false, "malformed request"},
		{"unknown command", `{"cmd":"explode"}` + "\n", false, `unknown command "explode"`},
		{"unknown field", `{"cmd":"status","sudo":true}` + "\n", false, "malformed request"},
		{"missing cmd", `{}` + "\n", false, `missing "cmd"`},
		{"truncated", `{"cmd":"sta`, true, "truncated request"},
		{"huge", strings.Repeat("x", 200<<10), false, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("unix", m.ctl)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			go func() {
				conn.Write([]byte(c.send))
				if c.closeWrite {
					conn.(*net.UnixConn).CloseWrite()
				}
			}()
			var resp struct {
				OK    bool   `json:"ok"`
				Error string `json:"error"`
			}
			if err := json.NewDecoder(conn).Decode(&resp); err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if resp.OK || !strings.Contains(resp.Error, c.want) {
				t.Fatalf("reply %+v, want an error with %q", resp, c.want)
			}
		})
	}
	if os.Getuid() == 0 {
		// Let anyone connect, then check that SO_PEERCRED still refuses.
		os.Chmod(m.ctl, 0o666)
		os.Chmod(filepath.Dir(m.ctl), 0o755)
		os.Chmod(bin.dir, 0o755)
		cmd := exec.Command(bin.handoff, "status", "--control", m.ctl)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "permission denied") {
			t.Fatalf("status as uid 65534: %v %s; want permission denied", err, out)
		}
	}
	if _, err := get(m.addr(), "/"); err != nil {
		t.Fatalf("master stopped serving: %v", err)
	}
	if _, err := m.status(); err != nil {
		t.Fatalf("control socket broken: %v", err)
	}
}

// --reload-strategy rolling replaces one worker at a time: never more than
// N+1 workers, no failed request; a failure part-way restores the old
// generation's retired slots.
func TestReloadRollingStrategy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	install(t, bin.hello1, app)
	m := startMaster(t, []string{"--workers", "3", "--reload-strategy", "rolling", "--ready-timeout", "2s"}, app)
	m.waitServing(1, 3)
	l := startLoad(m.addr(), 1)
	defer l.stop()
	if !l.waitRequests(50, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}

	// Watch the number of live workers while the reload runs.
	most := make(chan int)
	stopWatch := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-stopWatch:
				most <- n
				return
			default:
			}
			if st, err := m.status(); err == nil {
				n = max(n, len(st.Workers))
			}
		}
	}()
	install(t, bin.hello2, app)
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("rolling reload: exit %d %s%s", code, stdout, stderr)
	}
	close(stopWatch)
	if n := <-most; n > 4 {
		t.Fatalf("%d workers at once during a rolling reload of 3", n)
	}
	m.waitServing(2, 3)

	// A release whose slot 0 comes up but slot 1 never does: slot 0 of
	// the old generation was already retired and must come back.
	half := script(t, dir, "half", `[ "$HANDOFF_WORKER" = 0 ] && exec `+bin.hello2+`; exec sleep 600`)
	install(t, half, app)
	if _, stderr, code := m.cli("reload", "--wait"); code != 1 || !strings.Contains(stderr, "not ready within 2s") {
		t.Fatalf("failing rolling reload: exit %d %q", code, stderr)
	}
	st := m.waitServing(2, 3)
	for _, w := range st.Workers {
		if w.Generation != 2 {
			t.Fatalf("after the rollback: %+v", st.Workers)
		}
	}
	if n := m.log.count("worker starting", "generation=2 ", "slot=0"); n != 2 {
		t.Fatalf("old slot 0 started %d times, want 2 (first start, and back after the rollback)", n)
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d requests failed:\n%s", len(fails), summarize(fails))
	}
}
