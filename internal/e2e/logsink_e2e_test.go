//go:build linux

package e2e

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestLogReaderGone: 'handoff run … 2>&1 | head -2'. The master's
// stderr is a pipe whose reader reads two lines and goes; the master
// must not die of SIGPIPE: it keeps serving, reloads, and stops cleanly
// (exit 0, control socket removed) with nobody reading its log.
func TestLogReaderGone(t *testing.T) {
	// head -2: read two lines, then go.
	head := func(m *master, out *os.File) {
		defer out.Close()
		br := bufio.NewReader(out)
		for i := 0; i < 2; i++ {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("line %d of the master's log: %v", i+1, err)
			}
			m.log.Write([]byte(line))
		}
	}
	m := launchMaster(t, bin.handoff, nil, head, []string{"--workers", "2"}, bin.hello1)
	m.waitServing(1, 2)
	addr := m.addr()
	if _, err := get(addr, "/"); err != nil {
		t.Fatalf("request with the log reader gone: %v", err)
	}
	// A reload logs a few dozen lines, each meeting EPIPE.
	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload with the log reader gone: exit %d: %s", code, stderr)
	}
	st := m.waitServing(2, 2)
	if st.PID != m.cmd.Process.Pid {
		t.Fatalf("status from pid %d, want the master %d", st.PID, m.cmd.Process.Pid)
	}
	body, err := get(addr, "/")
	if err != nil {
		t.Fatalf("request after the reload: %v", err)
	}
	if v := field(body, "version"); v != "" && v != "v1" {
		t.Errorf("answer from version %q, want v1", v)
	}
	if out, _, code := m.cli("status"); code != 0 || out == "" {
		t.Errorf("handoff status: exit %d, %q", code, out)
	}

	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Errorf("master exit status %d after SIGTERM (%v), want 0", code, m.waitErr)
	}
	if _, err := os.Stat(m.ctl); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket %s left behind: %v", m.ctl, err)
	}
	for _, w := range st.Workers {
		if err := syscall.Kill(w.PID, 0); err == nil {
			t.Errorf("worker %s still runs after the master stopped", strconv.Itoa(w.PID))
		}
	}
}
