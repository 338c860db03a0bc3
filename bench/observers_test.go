package main

import (
	"math"
	"strings"
	"testing"
)

func TestCountEstablished(t *testing.T) {
	// From a real /proc/net/tcp: a listener on 127.0.0.1:18781 (0x495D),
	// two established connections to it (one from each side: only the
	// server's counts), one in CLOSE_WAIT (08), and others.
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:495D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 0100007F:495D 0100007F:C8F2 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C8F2 0100007F:495D 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:495D 0100007F:C8F6 08 00000000:00000000 00:00000000 00000000     0        0 103 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:495D 0100007F:C8F8 01 00000000:00000000 00:00000000 00000000     0        0 104 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:1495D 0100007F:C8F9 01 00000000:00000000 00:00000000 00000000     0        0 105 1 0000000000000000 20 4 30 10 -1
   6: 0100007F:0050 0100007F:495D 01 00000000:00000000 00:00000000 00000000     0        0 106 1 0000000000000000 20 4 30 10 -1
garbage
`
	if got := countEstablished([]byte(text), 18781); got != 2 {
		t.Errorf("countEstablished(18781) = %d, want 2", got)
	}
	if got := countEstablished([]byte(text), 80); got != 1 {
		t.Errorf("countEstablished(80) = %d, want 1", got)
	}
	if got := countEstablished([]byte(text), 1); got != 0 {
		t.Errorf("countEstablished(1) = %d, want 0", got)
	}
	if got := countEstablished(nil, 18781); got != 0 {
		t.Errorf("countEstablished(nothing) = %d, want 0", got)
	}
}

func TestTermQueries(t *testing.T) {
	const (
		bg  = "\x1b]11;rgb:0000/0000/0000\x1b\\"
		pos = "\x1b[1;1R"
	)
	var q termQueries
	// What handoff top writes first: two queries, answered in order.
	if got := string(q.replies([]byte("\x1b]11;?\x1b\\\x1b[6n"))); got != bg+pos {
		t.Errorf("first replies = %q, want %q", got, bg+pos)
	}
	// Nothing asked: nothing answered, and the carry is not answered
	// again.
	if got := q.replies([]byte("\x1b[2J\x1b[Hgeneration 1 serving")); len(got) != 0 {
		t.Errorf("replies to a screen = %q, want none", got)
	}
	// A query split across two reads is answered once, on the second.
	if got := q.replies([]byte("abc\x1b]1")); len(got) != 0 {
		t.Errorf("replies to half a query = %q, want none", got)
	}
	if got := string(q.replies([]byte("1;?\x1b\\"))); got != bg {
		t.Errorf("replies to its other half = %q, want %q", got, bg)
	}
	// Byte by byte.
	var r []byte
	for _, c := range []byte("x\x1b[6ny\x1b[c") {
		r = append(r, q.replies([]byte{c})...)
	}
	if got, want := string(r), pos+"\x1b[?62;22c"; got != want {
		t.Errorf("replies byte by byte = %q, want %q", got, want)
	}
}

func TestGoalBelow(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{
		{0.2, 0.6, "✓"},
		{0.2, 1.0, "unresolved"}, // the bound itself is not below it
		{0.9, 1.2, "unresolved"},
		{1.0, 1.5, "✗"},
		{math.NaN(), 1, "–"},
	} {
		if got := goalBelow(c.lo, c.hi, 1); got != c.want {
			t.Errorf("goalBelow(%v, %v, 1) = %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
}

func TestPairedDiff(t *testing.T) {
	got := pairedDiff([]float64{1.5, 2, 0.5}, []float64{1, 1})
	want := []float64{0.5, 1}
	if len(got) != len(want) {
		t.Fatalf("pairedDiff = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pairedDiff = %v, want %v", got, want)
		}
	}
	if got := pairedDiff(nil, []float64{1}); len(got) != 0 {
		t.Errorf("pairedDiff(nil, …) = %v, want empty", got)
	}
}

func TestObserverFormats(t *testing.T) {
	if got := fmtDelta(-0.125); got != "−0.12 %" && got != "−0.13 %" {
		t.Errorf("fmtDelta(-0.125) = %q", got)
	}
	if got := fmtDelta(0.5); got != "+0.50 %" {
		t.Errorf("fmtDelta(0.5) = %q", got)
	}
	if got := fmtCI(0.1, 0.3, 0.97); got != "+0.10 % to +0.30 %" {
		t.Errorf("fmtCI = %q", got)
	}
	if got := fmtCI(0.1, 0.3, 0.5); !strings.Contains(got, "50 % coverage") {
		t.Errorf("fmtCI with too few rounds = %q, want its coverage", got)
	}
	if got := corePct(250e6, 1e9); got != 25 {
		t.Errorf("corePct(250ms, 1s) = %v, want 25", got)
	}
	if got := corePct(1, 0); !math.IsNaN(got) {
		t.Errorf("corePct(_, 0) = %v, want NaN", got)
	}
}
