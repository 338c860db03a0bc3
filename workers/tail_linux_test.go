package workers

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// brokenRelease is a worker script: it serves until the file broken
// exists in dir; from then on its workers write six lines to stderr, the
// last with a terminal escape, and exit 1 before they are ready.
func brokenRelease(dir string) string {
	return fmt.Sprintf(`if [ -e %s/broken ]; then
	for i in 1 2 3 4 5; do echo "loading $i" >&2; done
	printf 'boom: missing module \033[31mfoo\033[0m\n' >&2
	exit 1
fi
exec sleep 600`, dir)
}

// The last lines a new worker wrote to stderr before it failed its reload
// are in the reload's outcome, escaped, with its pid.
func TestReloadFailureCarriesStderr(t *testing.T) {
	dir := t.TempDir()
	out := &syncBuf{}
	s := runReal(t, shellConfig(brokenRelease(dir), OutputPrefix, out))
	waitFor(t, "generation 1 serving", func() bool { return s.Status().Serving })
	if err := os.WriteFile(filepath.Join(dir, "broken"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-s.Reload(ReloadRequest{})
	if r.OK || r.Error == "" {
		t.Fatalf("the broken release's reload: %+v, want failed", r)
	}
	want := []string{"loading 2", "loading 3", "loading 4", "loading 5", `boom: missing module \x1b[31mfoo\x1b[0m`}
	if !slices.Equal(r.Stderr, want) {
		t.Errorf("reload failed (%s) with stderr %q, want %q", r.Error, r.Stderr, want)
	}
	if r.FailedPID <= 0 || r.StderrInherited {
		t.Errorf("reload failed with FailedPID %d, StderrInherited %v; want the worker's pid, its stderr read", r.FailedPID, r.StderrInherited)
	}
	if st := s.Status(); st.LastReload == nil || !slices.Equal(st.LastReload.Stderr, want) {
		t.Errorf("status's last reload: %+v, want its stderr %q", st.LastReload, want)
	}
	// Forwarded as ever, too.
	if !slices.Contains(out.lines(), "[slot 0 gen 2] boom: missing module \x1b[31mfoo\x1b[0m") {
		t.Errorf("the line was not forwarded: %q", out.lines())
	}
}

// A slot backing off says what its last worker wrote to stderr.
func TestBackoffCarriesStderr(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "broken"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := runReal(t, shellConfig(brokenRelease(dir), OutputJSON, &syncBuf{}))
	var ws WorkerStatus
	waitFor(t, "the slot in backoff, with its last worker's stderr", func() bool {
		st := s.Status()
		if len(st.Workers) != 1 || st.Workers[0].State != Backoff {
			return false
		}
		ws = st.Workers[0]
		return len(ws.LastStderr) > 0
	})
	if got := ws.LastStderr[len(ws.LastStderr)-1]; got != `boom: missing module \x1b[31mfoo\x1b[0m` {
		t.Errorf("last stderr %q (exit %q), want the boom line last", ws.LastStderr, ws.LastExit)
	}
}

// With an inherited stderr the master reads nothing: the outcome names
// the worker's pid, so that its output can be found where it went.
func TestReloadFailureInheritNamesPID(t *testing.T) {
	dir := t.TempDir()
	cfg := shellConfig(brokenRelease(dir), OutputInherit, nil)
	// The worker's stderr is the test's; keep its lines out of the way.
	cfg.Command[2] = strings.Replace(cfg.Command[2], "if [", "exec 2>/dev/null; if [", 1)
	s := runReal(t, cfg)
	waitFor(t, "generation 1 serving", func() bool { return s.Status().Serving })
	if err := os.WriteFile(filepath.Join(dir, "broken"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-s.Reload(ReloadRequest{})
	if r.OK || r.FailedPID <= 0 || r.Stderr != nil || !r.StderrInherited {
		t.Fatalf("reload: %+v, want failed, naming the worker's pid, its stderr inherited", r)
	}
}
