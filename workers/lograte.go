package workers

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logLimiter bounds the log lines that repeat once per event (a worker
// started, exited, failed, could not be started): for each message, a
// burst large enough for a whole reload, then a steady rate. Lines over
// budget are counted, and the next line of that message that gets through
// says how many were suppressed. A nil logLimiter limits nothing.
type logLimiter struct {
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

// newLogLimiter sizes the budget for n workers: a reload logs a few lines
// per worker, and each message may repeat n+10 times a second after that.
func newLogLimiter(n int) *logLimiter {
	return &logLimiter{
		burst:   float64(4*n + 16),
		rate:    float64(n + 10),
		buckets: make(map[string]*logBucket),
		now:     time.Now,
	}
}

// allow reports whether a line of msg may be logged now, and how many were
// suppressed since the last one that was.
func (l *logLimiter) allow(msg string) (bool, int) {
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

// log logs msg at lvl if its budget allows.
func (l *logLimiter) log(lg hclog.Logger, lvl hclog.Level, msg string, args ...any) {
	ok, suppressed := l.allow(msg)
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	lg.Log(lvl, msg, args...)
}
