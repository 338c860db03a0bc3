// Package testutil holds what the module's tests share: a directory for
// unix sockets and a buffer a process writes while a test reads it. Only
// tests import it.
//
// It is not a stable library API.
package testutil

import (
	"bytes"
	"os"
	"sync"
	"testing"
)

// ShortDir returns a fresh directory with a path short enough for unix
// sockets (t.TempDir's paths can exceed sun_path's 108 bytes). It is
// removed when the test ends.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ho")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Buffer is a bytes.Buffer safe for concurrent use: a log or a process's
// output that other goroutines write while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
