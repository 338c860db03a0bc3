package admin

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/connlimit"
)

// limitListener holds at most its cap of connections at a time
// (internal/connlimit). When a new connection comes at the cap, the
// connection idle the longest (one whose request header is not complete
// yet, or a keep-alive connection between requests) is closed to make
// room: idle connections cannot starve the probes. Only when every
// connection is in the middle of a request, each bounded by the server's
// timeouts, does the new one wait for a place.
type limitListener struct {
	net.Listener
	conns     *connlimit.Limiter[*limitConn]
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{
		Listener: ln,
		// An evicted connection's place is the new one's already: closing
		// the socket is enough (the server's goroutine for it then
		// closes it, which releases nothing more).
		conns: connlimit.New(n, func(c *limitConn) { c.Conn.Close() }),
		done:  make(chan struct{}),
	}
}

// open is how many connections are open.
func (l *limitListener) open() int { return l.conns.Held() }

// evicted is how many idle connections were closed to make room.
func (l *limitListener) evicted() uint64 { return l.conns.Evicted() }

// Accept takes the next connection from the kernel, then a place for it:
// a free one, else one an idle connection gives up, else the first to
// be freed or idle. Only one connection at a time waits here (http.Server
// accepts from one goroutine), so the connections held are at most the
// cap plus one.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitConn{Conn: c}
	for {
		if lc.lc, _ = l.conns.Admit(lc); lc.lc != nil {
			return lc, nil
		}
		select {
		case <-l.conns.Changed():
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener once; later calls return the first result.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
	})
	return l.closeErr
}

// limitConn is a connection holding a place in its limitListener.
type limitConn struct {
	net.Conn
	lc *connlimit.Conn[*limitConn]
}

// Close closes the connection and gives its place back.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.lc.Release()
	return err
}

// connKey is the request context key of the *limitConn a request came
// on (http.Server.ConnContext).
type connKey struct{}

// rateLog passes log lines on to an hclog.Logger, at most one per
// interval; it counts those it drops and says so on the next one. It is
// both an io.Writer (for a standard *log.Logger) and a promhttp.Logger.
type rateLog struct {
	log   hclog.Logger
	every time.Duration

	mu      sync.Mutex
	last    time.Time
	dropped int
}

func newRateLog(l hclog.Logger, every time.Duration) *rateLog {
	return &rateLog{log: l, every: every}
}

func (r *rateLog) Write(p []byte) (int, error) {
	now := time.Now()
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.dropped++
		r.mu.Unlock()
		return len(p), nil
	}
	dropped := r.dropped
	r.last, r.dropped = now, 0
	r.mu.Unlock()
	msg := "admin endpoint: " + strings.TrimSpace(string(p))
	if dropped > 0 {
		r.log.Warn(msg, "similar_lines_dropped", dropped)
	} else {
		r.log.Warn(msg)
	}
	return len(p), nil
}

// Println is promhttp.Logger's method.
func (r *rateLog) Println(v ...any) { r.Write([]byte(fmt.Sprintln(v...))) }

// std is a standard logger writing through r, for http.Server.ErrorLog.
func (r *rateLog) std() *log.Logger { return log.New(r, "", 0) }
