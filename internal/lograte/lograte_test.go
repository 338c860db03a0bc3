package lograte

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestLogLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(20, 11)
	l.now = func() time.Time { return now }
	allowed := 0
	for range 1000 {
		if ok, _ := l.allow("worker exited"); ok {
			allowed++
		}
	}
	if allowed != 20 {
		t.Errorf("burst: %d lines allowed, want 20", allowed)
	}
	if ok, _ := l.allow("another message"); !ok {
		t.Error("one message's flood suppressed another")
	}
	now = now.Add(time.Second)
	ok, suppressed := l.allow("worker exited")
	if !ok || suppressed != 980 {
		t.Errorf("after a second: allowed %v, suppressed %d; want true, 980", ok, suppressed)
	}
	for range 10 {
		l.allow("worker exited")
	}
	if ok, _ := l.allow("worker exited"); ok {
		t.Error("more than the rate allowed within a second")
	}
	var nilLim *Limiter
	if ok, n := nilLim.allow("x"); !ok || n != 0 {
		t.Error("a nil limiter limits")
	}
}

func TestEvery(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := Every(time.Second)
	l.now = func() time.Time { return now }
	if ok, _ := l.allow("bad request"); !ok {
		t.Fatal("the first line held back")
	}
	if ok, _ := l.allow("bad request"); ok {
		t.Fatal("two lines within a second")
	}
	now = now.Add(time.Second)
	if ok, n := l.allow("bad request"); !ok || n != 1 {
		t.Fatalf("after a second: %v, %d suppressed; want true, 1", ok, n)
	}
}

func TestLogSaysHowManyWereSuppressed(t *testing.T) {
	now := time.Unix(1000, 0)
	l := Every(time.Second)
	l.now = func() time.Time { return now }
	var out bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Debug, DisableTime: true})
	for range 100 {
		l.Log(log, hclog.Warn, "bad request", "error", "x")
		l.Log(log, hclog.Warn, "refused peer", "uid", 7)
	}
	if got := strings.Count(out.String(), "\n"); got != 2 {
		t.Fatalf("100 of each of two messages at one instant: %d lines, want 2:\n%s", got, out.String())
	}
	now = now.Add(999 * time.Millisecond)
	l.Log(log, hclog.Warn, "bad request", "error", "x")
	now = now.Add(time.Millisecond)
	l.Log(log, hclog.Warn, "bad request", "error", "y")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "error=y suppressed_since_last=100") {
		t.Fatalf("after a second: %q, want a third line with suppressed_since_last=100", lines)
	}
}
