package admin

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// limitListener holds at most cap(sem) connections at a time. When a
// new connection comes at the cap, the connection idle the longest (one
// whose request header is not complete yet, or a keep-alive connection
// between requests) is closed to make room: idle connections cannot
// starve the probes. Only when every connection is in the middle of a
// request, each bounded by the server's timeouts, does the new one wait
// for a slot.
type limitListener struct {
	net.Listener
	sem       chan struct{} // a token per connection open
	released  chan struct{} // signalled when a token is given back
	idled     chan struct{} // signalled when a connection becomes idle
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	conns   map[*limitConn]struct{} // the open connections
	seq     uint64                  // orders connections by when they became idle
	evicted atomic.Uint64           // idle connections closed to make room
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{
		Listener: ln,
		sem:      make(chan struct{}, n),
		released: make(chan struct{}, 1),
		idled:    make(chan struct{}, 1),
		done:     make(chan struct{}),
		conns:    make(map[*limitConn]struct{}, n),
	}
}

// open is how many connections are open.
func (l *limitListener) open() int { return len(l.sem) }

func (l *limitListener) release(c *limitConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	<-l.sem
	select {
	case l.released <- struct{}{}:
	default:
	}
}

// Accept takes the next connection from the kernel, then a slot for it:
// a free one, else one an idle connection gives up, else the first to
// be freed or idle. Only one connection at a time waits here (http.Server
// accepts from one goroutine), so the connections held are at most
// cap(sem)+1.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		select {
		case l.sem <- struct{}{}:
			return l.track(c), nil
		default:
		}
		if l.evictIdle() {
			continue
		}
		select {
		case l.sem <- struct{}{}:
			return l.track(c), nil
		case <-l.idled:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

func (l *limitListener) track(c net.Conn) *limitConn {
	lc := &limitConn{Conn: c, l: l}
	l.mu.Lock()
	l.seq++
	lc.idleSince = l.seq
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc
}

// evictIdle closes the connection idle the longest, if any is idle, and
// reports whether it did. The slot is free when it returns.
func (l *limitListener) evictIdle() bool {
	l.mu.Lock()
	var victim *limitConn
	for c := range l.conns {
		if !c.busy && (victim == nil || c.idleSince < victim.idleSince) {
			victim = c
		}
	}
	if victim != nil {
		// Marked gone under the lock: a request header completing now
		// finds it so (busy does nothing), and no other eviction
		// picks it again.
		delete(l.conns, victim)
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	l.evicted.Add(1)
	victim.Close() // gives the slot back before it returns
	return true
}

// busy marks c as serving a request: its header is complete, and it is
// not evicted until its response is written (idle).
func (l *limitListener) busy(c *limitConn) {
	l.mu.Lock()
	c.busy = true
	l.mu.Unlock()
}

// idle marks c as idle again: its response is written.
func (l *limitListener) idle(c *limitConn) {
	l.mu.Lock()
	c.busy = false
	l.seq++
	c.idleSince = l.seq
	l.mu.Unlock()
	select {
	case l.idled <- struct{}{}:
	default:
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

// limitConn is a connection holding a slot of its limitListener.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once

	// Guarded by l.mu.
	busy      bool
	idleSince uint64
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
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
