// Package lograte bounds the log lines that can repeat once per event (a
// worker started or failed, a bad request, a bad datagram): each message
// gets a token bucket, a burst and then a steady rate, and a line that
// gets through after some were held back says how many. handoff's master
// uses one of these wherever something outside it (workers, clients) can
// make it log. It is part of handoff, not a stable library API.
package lograte

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Limiter lets each message through at most Burst times at once, then at
// Rate a second. Lines over budget are counted, and the next line of that
// message that gets through says how many were suppressed. A nil Limiter
// limits nothing. Messages should be a fixed set (constants): each has a
// bucket.
type Limiter struct {
	burst, rate float64 // lines; lines per second

	mu      sync.Mutex
	buckets map[string]*logBucket // one per message: a fixed set
	now     func() time.Time
}

type logBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// New returns a Limiter with a burst of burst lines per message, then
// rate lines a second.
func New(burst, rate float64) *Limiter {
	return &Limiter{
		burst:   burst,
		rate:    rate,
		buckets: make(map[string]*logBucket),
		now:     time.Now,
	}
}

// Every lets one line of each message through per interval d.
func Every(d time.Duration) *Limiter { return New(1, 1/d.Seconds()) }

// allow reports whether a line of msg may be logged now, and how many were
// suppressed since the last one that was.
func (l *Limiter) allow(msg string) (bool, int) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[msg]
	if b == nil {
		b = &logBucket{tokens: l.burst, last: now}
		l.buckets[msg] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// Log logs msg at lvl if its budget allows.
func (l *Limiter) Log(lg hclog.Logger, lvl hclog.Level, msg string, args ...any) {
	ok, suppressed := l.allow(msg)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	lg.Log(lvl, msg, args...)
}
