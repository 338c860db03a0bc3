package workers

import (
	"context"
	"fmt"
	"time"
)

// Reload asks for a reload. Requests made while a reload runs are
// coalesced into one that starts when it ends. The returned channel
// receives the result of the reload that served this request.
func (s *Supervisor) Reload() <-chan ReloadResult {
	c := make(chan ReloadResult, 1)
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		c <- ReloadResult{Error: "master is no longer running workers"}
		return c
	}
	s.waiters = append(s.waiters, c)
	s.mu.Unlock()
	select {
	case s.reloadKick <- struct{}{}:
	default: // one is already pending
	}
	return c
}

func (s *Supervisor) reload(ctx context.Context) {
	s.mu.Lock()
	waiters := s.waiters
	s.waiters = nil
	s.lastGen++
	num := s.lastGen
	s.reloading = num
	s.mu.Unlock()

	s.log.Info("reload started", "generation", num, "strategy", string(s.cfg.Strategy))
	s.emit(Event{Kind: EventReloading, Generation: num})
	res := ReloadResult{Generation: num, Started: time.Now()}
	err := s.rollover(ctx, num, &res)
	res.DurationMS = msSince(res.Started)
	if err != nil {
		res.Error = err.Error()
		s.log.Error("reload failed, previous generation keeps serving", "generation", num, "error", err, "duration", time.Duration(res.DurationMS*1e6).Round(time.Millisecond).String())
	} else {
		res.OK = true
		s.log.Info("reload done", "generation", num, "serving_after", time.Duration(res.ServingMS*1e6).Round(time.Millisecond).String(), "duration", time.Duration(res.DurationMS*1e6).Round(time.Millisecond).String())
	}
	s.mu.Lock()
	s.reloading = 0
	s.lastReload = &res
	s.mu.Unlock()
	if res.OK {
		s.markServing()
	}
	s.emit(Event{Kind: EventReloaded, Generation: num, Reload: &res})
	for _, c := range waiters {
		c <- res
	}
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000
}

// rollover starts generation num and retires the serving one, or rolls
// back.
func (s *Supervisor) rollover(ctx context.Context, num int, res *ReloadResult) error {
	g, err := s.newGeneration(num, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.serving
	s.gens = append(s.gens, g)
	s.mu.Unlock()

	if s.cfg.Strategy == Rolling {
		return s.rolling(ctx, old, g, res)
	}
	for _, sl := range g.slots {
		sl.start()
	}
	if err := g.waitReady(ctx, g.slots); err != nil {
		if ctx.Err() != nil {
			// Stopping: shutdown stops this generation with the rest.
			return fmt.Errorf("master stopping: %w", err)
		}
		s.abandon(g)
		return err
	}
	res.ServingMS = msSince(res.Started)
	s.commit(old, g)
	for _, sl := range old.slots {
		if ctx.Err() != nil {
			return fmt.Errorf("master stopping: %w", ctx.Err())
		}
		old.retireSlot(ctx, sl)
	}
	s.forget(old)
	return nil
}

// rolling replaces the old generation one slot at a time. On failure the
// new workers are stopped and the old slots already retired are started
// again from the old generation's command.
func (s *Supervisor) rolling(ctx context.Context, old, g *generation, res *ReloadResult) error {
	for i, sl := range g.slots {
		sl.start()
		if err := g.waitReady(ctx, []*slot{sl}); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("master stopping: %w", err)
			}
			s.abandon(g)
			s.mu.Lock()
			for j := 0; j < i && j < len(old.slots); j++ {
				old.slots[j] = newSlot(old, j)
			}
			s.mu.Unlock()
			for j := 0; j < i && j < len(old.slots); j++ {
				old.slots[j].start()
			}
			return err
		}
		if i < len(old.slots) {
			old.retireSlot(ctx, old.slots[i])
		}
	}
	res.ServingMS = msSince(res.Started)
	s.commit(old, g)
	for _, sl := range old.slots[len(g.slots):] {
		old.retireSlot(ctx, sl)
	}
	s.forget(old)
	return ctx.Err()
}

// commit makes g the serving generation.
func (s *Supervisor) commit(old, g *generation) {
	g.probation.Store(false)
	old.retiring.Store(true)
	s.mu.Lock()
	s.serving = g
	s.mu.Unlock()
	s.log.Info("generation serving, retiring previous", "generation", g.num, "previous", old.num)
}

// abandon stops a generation that failed its rollout.
func (s *Supervisor) abandon(g *generation) {
	g.retiring.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	g.stop(ctx)
	s.forget(g)
}

func (s *Supervisor) forget(g *generation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i:i], s.gens[i+1:]...)
			return
		}
	}
}

// shutdown stops every worker of every generation at once: the stop
// signal, then up to the drain timeout, then SIGKILL.
