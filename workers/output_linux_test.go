package workers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf is a writer tests read back, whose writes can be held up.
type syncBuf struct {
	mu   sync.Mutex
	b    bytes.Buffer
	gate chan struct{} // if set, writes wait until it is closed
}

func (s *syncBuf) Write(p []byte) (int, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimRight(s.b.String(), "\n"), "\n")
}

// runReal runs a supervisor on real processes until the test ends.
func runReal(t *testing.T, cfg Config) *Supervisor {
	t.Helper()
	dir, err := os.MkdirTemp("", "hw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.RuntimeDir = dir
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		s.Kill()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return")
		}
	})
	return s
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func shellConfig(script string, mode OutputMode, to *syncBuf) Config {
	return Config{
		Command:    []string{"/bin/sh", "-c", script},
		Workers:    1,
		ReadyDelay: 10 * time.Millisecond,
		Output:     mode,
		OutputTo:   to,
	}
}

func TestOutputPrefix(t *testing.T) {
	out := &syncBuf{}
	long := strings.Repeat("x", maxLine+10)
	runReal(t, shellConfig(`echo hello; echo oops >&2; printf '%s\n' `+long+`; exec sleep 600`, OutputPrefix, out))
	waitFor(t, "four lines", func() bool { return len(out.lines()) >= 4 })
	got := out.lines()
	want := []string{"[slot 0 gen 1] hello", "[slot 0 gen 1] oops"}
	for _, w := range want {
		found := false
		for _, l := range got {
			found = found || l == w
		}
		if !found {
			t.Errorf("no line %q in %q", w, got)
		}
	}
	var xs int
	for _, l := range got {
		if strings.HasPrefix(l, "[slot 0 gen 1] x") {
			xs += len(l) - len("[slot 0 gen 1] ")
		}
	}
	if xs != len(long) {
		t.Errorf("the long line came through as %d bytes of x, want %d", xs, len(long))
	}
}

func TestOutputJSON(t *testing.T) {
	out := &syncBuf{}
	s := runReal(t, shellConfig(`echo 'hello "world"'; printf '\377 invalid utf-8\n' >&2; exec sleep 600`, OutputJSON, out))
	waitFor(t, "two lines", func() bool { return len(out.lines()) >= 2 })
	pid := 0
	waitFor(t, "a worker", func() bool {
		st := s.Status()
		if len(st.Workers) == 1 {
			pid = st.Workers[0].PID
		}
		return pid != 0
	})
	streams := map[string]string{}
	for _, l := range out.lines() {
		var wl workerLine
		if err := json.Unmarshal([]byte(l), &wl); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		if wl.Slot != 0 || wl.Generation != 1 || wl.PID != pid || wl.Time == "" {
			t.Errorf("line %+v: want slot 0, generation 1, pid %d", wl, pid)
		}
		streams[wl.Stream] = wl.Message
	}
	if streams["stdout"] != `hello "world"` || !strings.Contains(streams["stderr"], "invalid utf-8") {
		t.Errorf("messages by stream: %q", streams)
	}
}

// A worker that writes faster than the master's stderr takes blocks on
// its pipe: nothing is lost, and nothing is buffered beyond the pipe.
func TestOutputBackpressure(t *testing.T) {
	gate := make(chan struct{})
	out := &syncBuf{gate: gate}
	done := filepath.Join(t.TempDir(), "done")
	const lines = 20000 // ~1.2 MB: far more than a pipe holds
	runReal(t, shellConfig(fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "line $i of the output test"; i=$((i+1)); done; touch %s; exec sleep 600`, lines, done), OutputPrefix, out))
	// Held up, the worker cannot finish writing: the file never appears
	// while the gate is shut (checked over a while; it can only be
	// wrong one way).
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(done); err == nil {
			t.Fatal("the worker finished writing while the master's output was blocked: output was buffered or lost")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(gate)
	waitFor(t, "the worker done writing", func() bool { _, err := os.Stat(done); return err == nil })
	waitFor(t, "every line", func() bool { return len(out.lines()) >= lines })
	sc := bufio.NewScanner(strings.NewReader(strings.Join(out.lines(), "\n")))
	n := 0
	for sc.Scan() {
		if want := fmt.Sprintf("[slot 0 gen 1] line %d of the output test", n); sc.Text() != want {
			t.Fatalf("line %d: %q, want %q", n, sc.Text(), want)
		}
		n++
	}
	if n != lines {
		t.Errorf("%d lines, want %d", n, lines)
	}
}

// Workers run as another user, with their supplementary groups, and can
// still report READY=1 on their own notify socket (the runtime
// directory is traversable but not listable, the socket is theirs).
func TestWorkerUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run workers as another user")
	}
	out := &syncBuf{}
	cfg := shellConfig(`id -u; id -G; echo "$USER $HOME"; ls "$(dirname "$NOTIFY_SOCKET")" >/dev/null 2>&1 && echo listable; systemd-notify --ready; exec sleep 600`, OutputPrefix, out)
	cfg.ReadyDelay = 0
	cfg.User = &User{Name: "nobody", UID: 65534, GID: 65534, Groups: []uint32{65534, 100}, Home: "/nonexistent"}
	if _, err := os.Stat("/bin/systemd-notify"); err != nil {
		t.Skip("systemd-notify not installed")
	}
	s := runReal(t, cfg)
	waitFor(t, "a ready worker", func() bool {
		st := s.Status()
		return len(st.Workers) == 1 && st.Workers[0].State == Ready || strings.Contains(strings.Join(out.lines(), "\n"), "exited")
	})
	got := strings.Join(out.lines(), "\n")
	for _, want := range []string{"[slot 0 gen 1] 65534", "[slot 0 gen 1] 65534 100", "[slot 0 gen 1] nobody /nonexistent"} {
		if !strings.Contains(got, want) {
			t.Errorf("output %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "listable") {
		t.Error("the worker could list the runtime directory")
	}
}
