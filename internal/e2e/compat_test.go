//go:build linux

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Workers written for systemd in other languages accept what handoff
// passes: a C service using libsystemd's sd_listen_fds_with_names (which
// checks LISTEN_PID against its own pid) and sd_notify, and gunicorn, which
// takes LISTEN_FDS when LISTEN_PID is its own and sends READY=1 itself.
// .ci/run installs libsystemd-dev and gunicorn; elsewhere the test
// skips naming what is missing.
func TestCompatLibsystemdWorker(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		skipf(t, "gcc not installed")
	}
	if _, err := os.Stat("/usr/include/systemd/sd-daemon.h"); err != nil {
		skipf(t, "libsystemd-dev not installed (apt-get install libsystemd-dev)")
	}
	exe := filepath.Join(t.TempDir(), "sdlisten")
	if out, err := exec.Command(gcc, "-Wall", "-o", exe, "internal/e2e/testdata/compat/sdlisten.c", "-lsystemd").CombinedOutput(); err != nil {
		t.Fatalf("build the C worker: %v\n%s", err, out)
	}
	m := startMaster(t, []string{"--workers", "2", "--listen", "http=tcp://127.0.0.1:0", "--listen", "admin=tcp://127.0.0.1:0"}, exe)
	st := m.waitServing(1, 2)
	for _, w := range st.Workers {
		if w.Status != "libsystemd saw 2 fds" {
			t.Fatalf("slot %d STATUS %q: sd_listen_fds_with_names did not accept LISTEN_PID/LISTEN_FDS", w.Slot, w.Status)
		}
	}
	body, err := get(m.addr(), "/")
	if err != nil || !strings.Contains(body, "fds=2 names=http:admin ") {
		t.Fatalf("answer %q (%v), want fds=2 names=http:admin", body, err)
	}
}

func TestCompatGunicornWorker(t *testing.T) {
	gunicorn, err := exec.LookPath("gunicorn")
	if err != nil {
		skipf(t, "gunicorn not installed (apt-get install gunicorn)")
	}
	m := startMaster(t, []string{"--workers", "2"}, gunicorn, "--chdir", "internal/e2e/testdata/compat", "--workers", "1", "wsgi:app")
	m.waitServing(1, 2)
	addr := m.addr()
	body, err := get(addr, "/")
	if err != nil || !strings.Contains(body, "server=gunicorn") || !strings.Contains(body, "generation=1") {
		t.Fatalf("answer %q (%v)", body, err)
	}
	// A reload replaces both gunicorn masters; they drain on SIGTERM.
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: %s%s", stdout, stderr)
	}
	m.waitServing(2, 2)
	if body, err := get(addr, "/"); err != nil || !strings.Contains(body, "generation=2") {
		t.Fatalf("after reload: %q (%v)", body, err)
	}
}
