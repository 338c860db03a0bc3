package logsink

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Defaults for Options.
const (
	DefaultKeep    = 64
	DefaultMaxLine = 2 << 10
)

// Options tune a Writer. The zero value is the default.
type Options struct {
	// Keep is how many of the last lines dropped are kept, to be
	// written once the output works again: DefaultKeep if 0, none if
	// negative.
	Keep int
	// MaxLine caps the bytes kept of each dropped line: DefaultMaxLine
	// if 0 or less. A longer line is kept cut, marked with "…".
	MaxLine int
	// Notice formats the line that says how many lines were dropped
	// (dropped), how many of them follow (kept), and the error the
	// output last failed with. It must end in a newline. Default: a
	// plain-text line (see PlainNotice).
	Notice func(dropped uint64, kept int, err error) []byte
}

// Writer is an io.Writer whose writes never fail; see the package doc.
// It is safe for concurrent use.
type Writer struct {
	out  io.Writer
	opts Options

	mu      sync.Mutex
	pending uint64   // lines dropped since the output last worked
	ring    [][]byte // the last lines dropped, oldest at next once full
	next    int      // where the next line kept goes, once ring is full
	lastErr error    // the error the output last failed with
	midLine bool     // the output got part of a line: start a new one

	dropped atomic.Uint64 // all lines dropped
}

// New returns a Writer writing to out.
func New(out io.Writer, opts Options) *Writer {
	if opts.Keep == 0 {
		opts.Keep = DefaultKeep
	}
	if opts.Keep < 0 {
		opts.Keep = 0
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultMaxLine
	}
	if opts.Notice == nil {
		opts.Notice = PlainNotice
	}
	return &Writer{out: out, opts: opts}
}

// PlainNotice is the default Options.Notice.
func PlainNotice(dropped uint64, kept int, err error) []byte {
	msg := fmt.Sprintf("logsink: %d log lines dropped while the log output failed (%v)", dropped, err)
	if kept > 0 {
		msg += fmt.Sprintf("; the last %d follow", kept)
	}
	return []byte(msg + "\n")
}

// Dropped is how many lines were dropped since the Writer was made.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Write writes p to the output, after the notice of the lines dropped
// before it if any. It always returns len(p), nil: a line the output
// does not take is counted and dropped.
func (w *Writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending > 0 && !w.flushDropped() {
		w.drop(p)
		return len(p), nil
	}
	if n, err := w.out.Write(p); err != nil {
		if n > 0 && n < len(p) {
			w.midLine = p[n-1] != '\n'
			// A part of the line went out: count it as dropped whole,
			// keep what is left of it.
			w.drop(p[n:])
		} else {
			w.drop(p)
		}
		w.lastErr = err
	}
	return len(p), nil
}

// flushDropped writes the notice and the lines kept. It reports whether
// the output took the notice; if it did, the dropped lines are
// accounted for even if the output fails again during the replay (the
// rest of the kept lines are lost: the notice counted them).
func (w *Writer) flushDropped() bool {
	notice := w.opts.Notice(w.pending, len(w.ring), w.lastErr)
	if w.midLine {
		notice = append([]byte{'\n'}, notice...)
	}
	n, err := w.out.Write(notice)
	if err != nil {
		if n > 0 {
			w.midLine = notice[n-1] != '\n'
		}
		w.lastErr = err
		return false
	}
	w.midLine = false
	kept := make([][]byte, 0, len(w.ring))
	kept = append(append(kept, w.ring[w.next:]...), w.ring[:w.next]...)
	w.pending, w.ring, w.next = 0, nil, 0
	for _, line := range kept {
		if n, err := w.out.Write(line); err != nil {
			w.midLine = n > 0 && line[n-1] != '\n'
			w.lastErr = err
			break
		}
	}
	return true
}

// drop counts the lines in p and keeps the last of them.
func (w *Writer) drop(p []byte) {
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i+1], p[i+1:]
		} else {
			p = nil
		}
		w.pending++
		w.dropped.Add(1)
		w.keep(line)
	}
}

func (w *Writer) keep(line []byte) {
	if w.opts.Keep == 0 {
		return
	}
	var kept []byte
	if len(line) > w.opts.MaxLine {
		kept = append(append([]byte(nil), line[:w.opts.MaxLine]...), "…\n"...)
	} else {
		kept = append([]byte(nil), line...)
		if kept[len(kept)-1] != '\n' {
			kept = append(kept, '\n')
		}
	}
	if len(w.ring) < w.opts.Keep {
		w.ring = append(w.ring, kept)
		return
	}
	w.ring[w.next] = kept
	w.next = (w.next + 1) % len(w.ring)
}

// SupportsColor says whether the output is a terminal, for hclog's
// AutoColor (hclog.SupportsColor): a Writer hides the output's file
// descriptor, which hclog would otherwise check. An output without one
// gets no colour.
func (w *Writer) SupportsColor() bool {
	switch o := w.out.(type) {
	case interface{ SupportsColor() bool }:
		return o.SupportsColor()
	case interface{ Fd() uintptr }:
		return isTerminal(o.Fd())
	}
	return false
}
