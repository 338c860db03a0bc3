package admin

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// limitListener accepts at most cap(sem) connections at a time; the
// others wait in the kernel's backlog until one closes.
type limitListener struct {
	net.Listener
	sem       chan struct{} // a token per connection open (or accept under way)
	released  chan struct{} // signalled when a token is given back
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), released: make(chan struct{}, 1), done: make(chan struct{})}
}

// open is how many connections are open, counting an accept under way.
func (l *limitListener) open() int { return len(l.sem) }

func (l *limitListener) release() {
	<-l.sem
	select {
	case l.released <- struct{}{}:
	default:
	}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		l.release()
		return nil, err
	}
	return &limitConn{Conn: c, release: l.release}, nil
}

// Close closes the listener once; later calls return the first result.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
	})
	return l.closeErr
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

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
