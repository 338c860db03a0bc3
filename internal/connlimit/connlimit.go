package connlimit

import (
	"container/list"
	"sync"
)

// Limiter holds at most its cap of connections, each a value of T (the
// server's own record of it). Its methods are safe for concurrent use.
type Limiter[T any] struct {
	max     int
	evict   func(T)
	changed chan struct{} // one pending signal: a place was freed, or a connection became idle

	mu      sync.Mutex
	held    int        // connections counted against max
	idle    *list.List // *Conn[T] idle, the longest idle first
	evicted uint64
}

// Conn is one connection admitted by a Limiter.
type Conn[T any] struct {
	// Value is the server's record of the connection, as given to Admit.
	Value T

	l *Limiter[T]
	// Guarded by l.mu.
	elem     *list.Element // in l.idle while idle
	evicted  bool
	released bool
}

// New makes a Limiter holding at most n connections (at least 1). evict
// is called, without the Limiter's lock held, on a connection evicted to
// make room for a new one: it closes it, or makes its pending read fail.
func New[T any](n int, evict func(T)) *Limiter[T] {
	return &Limiter[T]{
		max:     max(n, 1),
		evict:   evict,
		changed: make(chan struct{}, 1),
		idle:    list.New(),
	}
}

// Admit counts a new connection, idle. At the cap it evicts the one idle
// the longest and takes its place, and says so. With every connection
// held busy it returns nil: the caller refuses the connection, or waits
// for Changed and tries again.
func (l *Limiter[T]) Admit(v T) (c *Conn[T], evicted bool) {
	c = &Conn[T]{Value: v, l: l}
	l.mu.Lock()
	var victim *Conn[T]
	if l.held >= l.max {
		e := l.idle.Front()
		if e == nil {
			l.mu.Unlock()
			return nil, false
		}
		victim = e.Value.(*Conn[T])
		l.idle.Remove(e)
		victim.elem = nil
		victim.evicted = true
		l.held--
		l.evicted++
	}
	l.held++
	c.elem = l.idle.PushBack(c)
	l.mu.Unlock()
	if victim != nil {
		l.evict(victim.Value)
	}
	return c, victim != nil
}

// Changed is signalled when a place may have become free: a connection
// was released or became idle. One signal is kept for a reader to come.
func (l *Limiter[T]) Changed() <-chan struct{} { return l.changed }

func (l *Limiter[T]) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Held is how many connections count against the cap.
func (l *Limiter[T]) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Counts is how many connections count against the cap, and how many
// of them are idle, at one moment.
func (l *Limiter[T]) Counts() (held, idle int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.idle.Len()
}

// Evicted is how many connections were evicted to make room.
func (l *Limiter[T]) Evicted() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted
}

// EachIdle calls fn on every idle connection, the longest idle first,
// with the Limiter's lock held: fn must not call the Limiter.
func (l *Limiter[T]) EachIdle(fn func(T)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for e := l.idle.Front(); e != nil; e = e.Next() {
		fn(e.Value.(*Conn[T]).Value)
	}
}

// Busy marks c as having a request in hand: it is not evicted until it
// is idle again. It reports whether c was evicted before (its request
// may still be served: it is complete, and the caller bounds what an
// evicted connection costs).
func (c *Conn[T]) Busy() (evicted bool) {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.elem != nil {
		l.idle.Remove(c.elem)
		c.elem = nil
	}
	return c.evicted
}

// Idle marks c as idle again (a keep-alive connection between requests):
// the newest idle, the last to be evicted. It does nothing to a
// connection evicted or released.
func (c *Conn[T]) Idle() {
	l := c.l
	l.mu.Lock()
	if c.evicted || c.released {
		l.mu.Unlock()
		return
	}
	if c.elem != nil {
		l.idle.Remove(c.elem)
	}
	c.elem = l.idle.PushBack(c)
	l.mu.Unlock()
	l.signal()
}

// Evicted reports whether c was evicted to make room for a newer one.
func (c *Conn[T]) Evicted() bool {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.evicted
}

// Release forgets c once it is closed, freeing its place unless it was
// evicted (its place went to a newer connection then). Calls after the
// first do nothing.
func (c *Conn[T]) Release() {
	l := c.l
	l.mu.Lock()
	if c.released {
		l.mu.Unlock()
		return
	}
	c.released = true
	if c.elem != nil {
		l.idle.Remove(c.elem)
		c.elem = nil
	}
	if !c.evicted {
		l.held--
	}
	l.mu.Unlock()
	l.signal()
}
