//go:build linux

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Readiness probes, end to end: for servers that send no READY=1 the
// master probes each worker through its own steered socket.

// --ready tcp: a worker that never sends READY=1 is ready once it
// accepts the probe's connection.
func TestProbeTCP(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2", "--ready", "tcp"}, bin.testapp, "-mode", "never-ready")
	m.waitServing(1, 2)
	m.log.waitLine(t, 10*time.Second, "worker ready", "probe: connection accepted")
	if _, err := get(m.addr(), "/"); err != nil {
		t.Fatal(err)
	}
}

// --ready http=/healthz: a release whose workers answer 500 on their
// health path fails its reload while the old generation serves on, and
// the reason names the probe's last answer.
func TestProbeHTTPFailsReload(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	good := script(t, dir, "good", "exec "+bin.testapp+" -mode never-ready -health-status 200")
	sick := script(t, dir, "sick", "exec "+bin.testapp+" -mode never-ready -health-status 500")
	install(t, good, app)
	m := startMaster(t, []string{"--workers", "2", "--ready", "http=/healthz", "--ready-timeout", "3s"}, app)
	before := m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(50, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	install(t, sick, app)
	_, stderr, code := m.cli("reload", "--wait")
	if code != 1 || !strings.Contains(stderr, "not ready within 3s") || !strings.Contains(stderr, "GET /healthz: 500 Internal Server Error") {
		t.Fatalf("reload --wait: exit %d, stderr %q; want 1 naming the probe's answer", code, stderr)
	}
	st := m.waitServing(1, 2)
	for i, w := range st.Workers {
		if w.PID != before.Workers[i].PID {
			t.Fatalf("old generation disturbed: %+v", st.Workers)
		}
	}
	if !l.waitRequests(50, 20*time.Second) {
		t.Fatal("load stalled")
	}
	if fails := l.stop(); len(fails) > 0 {
		t.Fatalf("%d of %d requests failed:\n%s", len(fails), l.total.Load(), summarize(fails))
	}
}

// A probe must reach one worker, so it needs each worker's own socket.
func TestProbeNeedsSteering(t *testing.T) {
	_, stderr, code := runHandoff(t, "run", "--control", filepath.Join(t.TempDir(), "ctl"), "--listen", "http=tcp://127.0.0.1:0",
		"--balance", "shared", "--ready", "tcp", "--", bin.testapp)
	if code != 1 || !strings.Contains(stderr, "not a steered TCP listener") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
