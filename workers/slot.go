package workers

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Restart policy (einhorn's rule: throttle crash loops, not healthy
// workers). A worker that dies before it is ready, or within minHealthy of
// becoming ready, is a failure: its slot waits backoffMin, doubling up to
// backoffMax, before the next start. A worker that served longer is
// replaced at once and the slot's backoff resets.
const (
	minHealthy = time.Second
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
)

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return backoffMin
	}
	if d *= 2; d > backoffMax {
		return backoffMax
	}
	return d
}

// slot is one position (HANDOFF_WORKER) in a generation. It keeps a worker
// running in that position until it is stopped, replacing workers that
// exit, with backoff.
type slot struct {
	gen   *generation
	index int

	readyc    chan struct{} // closed when a worker of the slot first became ready
	readyOnce sync.Once
	stopc     chan struct{} // closed when the slot is being stopped
	stopOnce  sync.Once
	donec     chan struct{} // closed when run returned

	mu           sync.Mutex
	started      bool
	cur          *worker
	restarts     int
	backoffUntil time.Time
	stopCtx      context.Context
}

func newSlot(g *generation, index int) *slot {
	return &slot{
		gen:    g,
		index:  index,
		readyc: make(chan struct{}),
		stopc:  make(chan struct{}),
		donec:  make(chan struct{}),
	}
}

func (s *slot) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	go s.run()
}

func (s *slot) run() {
	defer close(s.donec)
	log := s.gen.sup.log.With("generation", s.gen.num, "slot", s.index)
	var delay time.Duration
	for {
		failed, reason := s.runOne()
		if s.stopping() {
			return
		}
		switch {
		case s.gen.probation.Load() && failed:
			// A generation on probation is not retried: its failure
			// fails the reload, and the old generation keeps serving.
			s.gen.fail(fmt.Errorf("slot %d: %s", s.index, reason))
			return
		case s.gen.probation.Load():
			s.gen.fail(fmt.Errorf("slot %d: %s while the reload was in progress", s.index, reason))
			return
		case s.gen.retiring.Load():
			log.Info("not replacing worker: its generation is being retired")
			return
		}
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
		if !failed {
			delay = 0
			log.Info("replacing worker", "previous", reason)
			continue
		}
		delay = nextBackoff(delay)
		log.Warn("worker failed, restarting after backoff", "reason", reason, "backoff", delay.String())
		s.mu.Lock()
		s.backoffUntil = time.Now().Add(delay)
		s.mu.Unlock()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.stopc:
			t.Stop()
			return
		}
		s.mu.Lock()
		s.backoffUntil = time.Time{}
		s.mu.Unlock()
	}
}

// runOne starts a worker and waits until it exits.
func (s *slot) runOne() (failed bool, reason string) {
	w, err := s.gen.sup.spawn(s.gen, s.index)
	if err != nil {
		s.gen.sup.log.Error("cannot start worker", "generation", s.gen.num, "slot", s.index, "error", err)
		return true, err.Error()
	}
	s.mu.Lock()
	if s.stopCtx != nil {
		ctx := s.stopCtx
		s.mu.Unlock()
		w.Stop(ctx)
		return false, "stopped"
	}
	s.cur = w
	s.mu.Unlock()

	select {
	case <-w.readyc:
		s.readyOnce.Do(func() { close(s.readyc) })
		<-w.donec
	case <-w.donec:
	}
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	return w.outcome()
}

func (s *slot) stopping() bool {
	select {
	case <-s.stopc:
		return true
	default:
		return false
	}
}

// stop stops the slot: no more restarts, and its worker drains until ctx is
// done, then is killed. It returns once the slot's worker has exited.
func (s *slot) stop(ctx context.Context) {
	s.mu.Lock()
	if s.stopCtx == nil {
		s.stopCtx = ctx
	}
	w, started := s.cur, s.started
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stopc) })
	if !started {
		return
	}
	if w != nil {
		w.Stop(ctx)
	}
	<-s.donec
}

// snapshot reports the slot's current worker, or its backoff.
func (s *slot) snapshot() (WorkerStatus, bool) {
	s.mu.Lock()
	w, restarts, until := s.cur, s.restarts, s.backoffUntil
	s.mu.Unlock()
	ws := WorkerStatus{Slot: s.index, Generation: s.gen.num, Restarts: restarts}
	switch {
	case w != nil:
		w.mu.Lock()
		ws.PID = w.proc.pid
		ws.State = w.state
		ws.Status = w.status
		ws.Since = w.started
		w.mu.Unlock()
	case !until.IsZero():
		ws.State = Backoff
		ws.Since = until
	default:
		return ws, false
	}
	return ws, true
}
