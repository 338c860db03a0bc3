//go:build linux

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A release whose worker dies at start says why: 'reload --wait' exits 1
// (rolled back) with the last lines the worker wrote to stderr under its
// error, and status shows them under the last reload. With an inherited
// stderr (the journal's, under systemd) the error names the worker's pid
// instead.
func TestReloadWaitShowsFailedWorkerStderr(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"prefix", "inherit"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			app := filepath.Join(dir, "app")
			install(t, bin.hello1, app)
			m := startMaster(t, []string{"--workers", "1", "--worker-output", mode}, app)
			m.waitServing(1, 1)
			install(t, script(t, dir, "broken", `echo "loading the app" >&2
echo "boom: missing module" >&2
exit 1`), app)
			stdout, stderr, code := m.cli("reload", "--wait")
			if code != 1 || !strings.Contains(stdout, "rolled back: ") {
				t.Fatalf("reload of the broken release: exit %d, want 1 (rolled back); stdout %q, stderr %q", code, stdout, stderr)
			}
			if mode == "inherit" {
				if strings.Contains(stderr, "boom") || !strings.Contains(stderr, "stderr went to the master's (under systemd: journalctl _PID=") {
					t.Errorf("reload error with an inherited stderr: %q, want the worker's pid named", stderr)
				}
				m.log.waitLine(t, 20*time.Second, "boom: missing module") // where it went
				return
			}
			want := "handoff: the last lines worker "
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, "handoff: loading the app\nhandoff: boom: missing module\n") {
				t.Errorf("reload error: %q, want the worker's last stderr lines under it", stderr)
			}
			m.waitServing(1, 1)
			stdout, _, code = m.cli("status")
			if code != 0 || !strings.Contains(stdout, fmt.Sprintf("    %s\n", "boom: missing module")) {
				t.Errorf("status: exit %d, want the failed reload's stderr lines:\n%s", code, stdout)
			}
		})
	}
}
