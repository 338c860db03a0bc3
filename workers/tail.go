package workers

import (
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// A failed worker's last words: the master keeps the last TailLines lines
// each worker wrote to its stderr, where it reads that stream anyway
// (OutputPrefix, OutputJSON), so that a reload that fails because a new
// worker exited can say why in its outcome (ReloadResult.Stderr), and
// status can say why a slot backs off (WorkerStatus.LastStderr).
const (
	// TailLines is how many of a worker's last stderr lines are kept.
	TailLines = 5
	// TailBytes bounds each kept line, after escaping; a longer one is
	// cut and ends in "…".
	TailBytes = 200
	// tailWait bounds how long the watcher of a worker whose main
	// process exited waits for the end of its stderr before the exit
	// goes to the loop: a helper of its tree may hold the pipe open
	// until the tree is cleaned up, which follows the exit.
	tailWait = 250 * time.Millisecond
)

// tail is a ring of a worker's last stderr lines, written by the
// goroutine forwarding that stream and read by the supervisor's.
type tail struct {
	mu    sync.Mutex
	lines [TailLines]string
	n     int // lines written so far
}

// add keeps line (without its newline), escaped and bounded.
func (t *tail) add(line []byte) {
	s := escapeLine(line)
	t.mu.Lock()
	t.lines[t.n%TailLines] = s
	t.n++
	t.mu.Unlock()
}

// last returns the lines kept, oldest first; nil for a nil tail or none.
func (t *tail) last() []string {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := min(t.n, TailLines)
	if k == 0 {
		return nil
	}
	out := make([]string, 0, k)
	for i := t.n - k; i < t.n; i++ {
		out = append(out, t.lines[i%TailLines])
	}
	return out
}

// escapeLine makes b one printable line of at most TailBytes bytes:
// control characters (a terminal's escape sequences among them) and
// bytes that are not UTF-8 are written as Go escapes, a trailing \r is
// dropped, and what does not fit is cut, marked with "…".
func escapeLine(b []byte) string {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	const more = "…"
	var sb strings.Builder
	fit := 0 // the longest escaped prefix, in whole pieces, that leaves room for more
	for len(b) > 0 && sb.Len() <= TailBytes {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		case r == '\t':
			sb.WriteString(`\t`)
		case r < 0x100 && (unicode.IsControl(r) || !unicode.IsPrint(r) && r != ' '):
			fmt.Fprintf(&sb, `\x%02x`, r)
		case !unicode.IsPrint(r) && r != ' ':
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.Write(b[:size])
		}
		b = b[size:]
		if sb.Len() <= TailBytes-len(more) {
			fit = sb.Len()
		}
	}
	out := sb.String()
	if len(out) > TailBytes || len(b) > 0 {
		out = out[:fit] + more
	}
	return out
}

// waitStderr waits, off the loop, until the worker's stderr is read to
// its end, or tailWait. It does nothing for an inherited stderr.
func (w *worker) waitStderr() {
	if w.stderrDone == nil {
		return
	}
	t := time.NewTimer(tailWait)
	defer t.Stop()
	select {
	case <-w.stderrDone:
	case <-t.C:
	}
}
