package logsink

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// rawFD writes to a descriptor with write(2) itself: a non-blocking
// pipe then fails with EAGAIN when full, as a journald stream can,
// where an *os.File would wait in Go's poller.
type rawFD int

func (fd rawFD) Write(p []byte) (int, error) {
	n, err := unix.Write(int(fd), p)
	if n < 0 {
		n = 0
	}
	if err != nil {
		return n, &os.PathError{Op: "write", Path: "pipe", Err: err}
	}
	return n, nil
}

// TestClosedPipe: with the pipe's read end closed, every write fails
// with EPIPE; the Writer reports none of it, and counts the lines.
func TestClosedPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r.Close()
	if _, err := w.Write([]byte("x\n")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("write to a pipe without reader: %v, want EPIPE", err)
	}
	sink := New(w, Options{})
	log := hclog.New(&hclog.LoggerOptions{Output: sink, Color: hclog.AutoColor})
	const writers, lines = 4, 50
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				log.Info("a line nobody reads", "writer", g, "i", i)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 3; i++ {
		if n, err := fmt.Fprintf(sink, "direct %d\n", i); err != nil || n != len(fmt.Sprintf("direct %d\n", i)) {
			t.Errorf("Write: %d, %v; want all of it, no error", n, err)
		}
	}
	if got, want := sink.Dropped(), uint64(writers*lines+3); got != want {
		t.Errorf("Dropped() = %d, want %d", got, want)
	}
	sink.mu.Lock()
	kept, lastErr := len(sink.ring), sink.lastErr
	sink.mu.Unlock()
	if kept != DefaultKeep {
		t.Errorf("%d lines kept, want %d", kept, DefaultKeep)
	}
	if !errors.Is(lastErr, syscall.EPIPE) {
		t.Errorf("last error %v, want EPIPE", lastErr)
	}
}

// TestRecovers: a non-blocking pipe that is full fails writes with
// EAGAIN; once its reader drains it, the next line comes after one
// saying how many were dropped, and the dropped ones kept.
func TestRecovers(t *testing.T) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(p[1], true); err != nil {
		t.Fatal(err)
	}
	rd := os.NewFile(uintptr(p[0]), "pipe-r")
	defer rd.Close()
	defer unix.Close(p[1])
	w := rawFD(p[1])
	// Fill the pipe.
	fill := make([]byte, 4096)
	filled := 0
	for {
		n, err := w.Write(fill)
		filled += n
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	sink := New(w, Options{Keep: 3})
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(sink, "dropped line %d\n", i)
	}
	if n := sink.Dropped(); n != 10 {
		t.Fatalf("Dropped() = %d with the pipe full, want 10", n)
	}
	// Drain the pipe: what was in it before.
	if _, err := io.ReadFull(rd, make([]byte, filled)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(sink, "the line after\n")
	unix.Close(p[1])
	p[1] = -1
	rest, err := io.ReadAll(bufio.NewReader(rd))
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		t.Fatal(err)
	}
	got := string(rest)
	want := "logsink: 10 log lines dropped while the log output failed (write pipe: resource temporarily unavailable); the last 3 follow\n" +
		"dropped line 8\ndropped line 9\ndropped line 10\n" +
		"the line after\n"
	if got != want {
		t.Errorf("after the pipe drained, the reader got:\n%s\nwant:\n%s", got, want)
	}
	if n := sink.Dropped(); n != 10 {
		t.Errorf("Dropped() = %d after recovery, want still 10", n)
	}
	// Once recovered, lines pass as they are.
	sink.mu.Lock()
	pending, kept := sink.pending, len(sink.ring)
	sink.mu.Unlock()
	if pending != 0 || kept != 0 {
		t.Errorf("after recovery: %d pending, %d kept, want none", pending, kept)
	}
}

// flaky is an output that fails while fail is set, taking the first
// partial bytes of a write before it fails.
type flaky struct {
	fail    bool
	partial int
	out     strings.Builder
}

func (f *flaky) Write(p []byte) (int, error) {
	if f.fail {
		n := min(f.partial, len(p))
		f.out.Write(p[:n])
		return n, errors.New("output broken")
	}
	return f.out.Write(p)
}

// TestPartialAndLong: a line the output took part of is finished by a
// newline before the notice; kept lines are cut to MaxLine; with Keep
// negative only the count is written.
func TestPartialAndLong(t *testing.T) {
	f := &flaky{fail: true, partial: 4}
	sink := New(f, Options{Keep: 2, MaxLine: 8})
	io.WriteString(sink, "first line\n")
	io.WriteString(sink, "a very long line indeed\nshort\n")
	f.fail = false
	io.WriteString(sink, "back\n")
	// The second write tried the notice first: it got 4 bytes of it out
	// ("\nlog"), then the notice was written again, on a line of its own.
	want := "firs\nlog\nlogsink: 3 log lines dropped while the log output failed (output broken); the last 2 follow\n" +
		"a very l…\nshort\n" + "back\n"
	if got := f.out.String(); got != want {
		t.Errorf("output:\n%q\nwant:\n%q", got, want)
	}

	f = &flaky{fail: true}
	sink = New(f, Options{Keep: -1, Notice: func(n uint64, kept int, err error) []byte {
		return fmt.Appendf(nil, "dropped=%d kept=%d err=%q\n", n, kept, err)
	}})
	for i := 0; i < 1000; i++ {
		io.WriteString(sink, "x\n")
	}
	f.fail = false
	io.WriteString(sink, "y\n")
	if got, want := f.out.String(), "dropped=1000 kept=0 err=\"output broken\"\ny\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

// TestColor: hclog's AutoColor sees through the Writer: no colour for a
// pipe or a buffer.
func TestColor(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if New(w, Options{}).SupportsColor() {
		t.Errorf("a pipe supports colour")
	}
	if New(&strings.Builder{}, Options{}).SupportsColor() {
		t.Errorf("a buffer supports colour")
	}
	var _ hclog.SupportsColor = (*Writer)(nil)
}
