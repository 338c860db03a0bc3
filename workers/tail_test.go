package workers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscapeLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"boom: missing module", "boom: missing module"},
		{"crlf\r", "crlf"},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"tab\there", `tab\there`},
		{"bell\a nul\x00", `bell\x07 nul\x00`},
		{"\xff not utf-8", `\xff not utf-8`},
		{"bidi \u202e override", `bidi \u202e override`},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{strings.Repeat("x", TailBytes), strings.Repeat("x", TailBytes)},
		{strings.Repeat("x", TailBytes+1), strings.Repeat("x", TailBytes-len("…")) + "…"},
		// An escape is never cut in half.
		{strings.Repeat("x", TailBytes-len("…")-2) + "\x1b" + strings.Repeat("y", 10), strings.Repeat("x", TailBytes-len("…")-2) + "…"},
	} {
		got := escapeLine([]byte(c.in))
		if got != c.want {
			t.Errorf("escapeLine(%q) = %q, want %q", c.in, got, c.want)
		}
		if len(got) > TailBytes || !utf8.ValidString(got) {
			t.Errorf("escapeLine(%q) = %q: %d bytes (at most %d), valid UTF-8 %v", c.in, got, len(got), TailBytes, utf8.ValidString(got))
		}
	}
	// Whatever the input, the line is bounded, valid and printable.
	long := strings.Repeat("\x1b\xff✓", 1000)
	if got := escapeLine([]byte(long)); len(got) > TailBytes || !utf8.ValidString(got) || strings.ContainsAny(got, "\x1b\n") {
		t.Errorf("escapeLine of %d bytes of escapes: %q", len(long), got)
	}
}

func TestTailKeepsTheLast(t *testing.T) {
	var tl *tail
	if got := tl.last(); got != nil {
		t.Errorf("a nil tail has lines %q", got)
	}
	tl = &tail{}
	if got := tl.last(); got != nil {
		t.Errorf("an empty tail has lines %q", got)
	}
	var want []string
	for i := range TailLines + 3 {
		l := fmt.Sprintf("line %d", i)
		tl.add([]byte(l))
		want = append(want, l)
		if len(want) > TailLines {
			want = want[1:]
		}
		if got := tl.last(); !slices.Equal(got, want) {
			t.Fatalf("after %d lines: %q, want %q", i+1, got, want)
		}
	}
}
