package control

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// logLimit lets through at most one line of each message per interval,
// so that a client hammering the socket with bad requests cannot flood
// the log. Lines held back are counted, and the next line of that
// message that gets through says how many ("suppressed"). The messages
// are a fixed set of constants, so the maps stay small.
type logLimit struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

func newLogLimit(every time.Duration) *logLimit {
	return &logLimit{every: every, now: time.Now, last: map[string]time.Time{}, suppressed: map[string]int{}}
}

// log writes msg at level unless a line of msg went out less than an
// interval ago.
func (l *logLimit) log(log hclog.Logger, level hclog.Level, msg string, args ...any) {
	l.mu.Lock()
	now := l.now()
	if t, ok := l.last[msg]; ok && now.Sub(t) < l.every {
		l.suppressed[msg]++
		l.mu.Unlock()
		return
	}
	n := l.suppressed[msg]
	l.suppressed[msg] = 0
	l.last[msg] = now
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(level, msg, args...)
}
