package workers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// generation is one set of workers started from one resolution of the
// command: every worker of a generation runs the same binary.
type generation struct {
	sup  *Supervisor
	num  int
	path string // the command, resolved when the generation was made
	argv []string

	slots []*slot

	// probation is set while the generation is being rolled out: a worker
	// that fails then fails the reload instead of being restarted.
	probation atomic.Bool
	// retiring is set once a newer generation serves: workers that exit
	// are not replaced.
	retiring atomic.Bool

	failOnce sync.Once
	failc    chan struct{} // closed on the first failure during probation
	failErr  error
}

// ResolveCommand finds argv0 as it is on disk now (in PATH if it has no
// slash), following symlinks, so that each generation runs the binary that
// was there when it started. It fails if the file is missing or not
// executable.
func ResolveCommand(argv0 string) (string, error) {
	p, err := exec.LookPath(argv0)
	if err != nil {
		var (
			ee *exec.Error
			pe *fs.PathError
		)
		if errors.As(err, &pe) {
			err = pe.Err
		} else if errors.As(err, &ee) {
			err = ee.Err
		}
		return "", fmt.Errorf("command %q: %w", argv0, err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("command %q: %w", argv0, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}

func (s *Supervisor) newGeneration(num int, probation bool) (*generation, error) {
	path, err := ResolveCommand(s.cfg.Command[0])
	if err != nil {
		return nil, err
	}
	g := &generation{
		sup:   s,
		num:   num,
		path:  path,
		argv:  s.cfg.Command,
		failc: make(chan struct{}),
	}
	g.probation.Store(probation)
	g.slots = make([]*slot, s.cfg.Workers)
	for i := range g.slots {
		g.slots[i] = newSlot(g, i)
	}
	return g, nil
}

func (g *generation) fail(err error) {
	g.failOnce.Do(func() {
		g.failErr = err
		close(g.failc)
	})
}

// waitReady waits until every slot in slots has had a ready worker. It
// fails on the generation's first failure (only reported on probation)
// or when ctx is done.
func (g *generation) waitReady(ctx context.Context, slots []*slot) error {
	for _, s := range slots {
		select {
		case <-s.readyc:
		case <-g.failc:
			return g.failErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// readyAll returns a channel closed once every slot has been ready.
func (g *generation) readyAll() <-chan struct{} {
	c := make(chan struct{})
	go func() {
		for _, s := range g.slots {
			select {
			case <-s.readyc:
			case <-g.failc:
				return
			case <-s.stopc:
				return
			}
		}
		close(c)
	}()
	return c
}

// stop stops every slot at once, draining until ctx is done.
func (g *generation) stop(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range g.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop(ctx)
		}()
	}
	wg.Wait()
}

// retireSlot stops one slot, draining its worker for up to the drain
// timeout. It returns early when ctx is done, leaving the worker to the
// shutdown that follows.
func (g *generation) retireSlot(ctx context.Context, s *slot) {
	drain, cancel := context.WithTimeout(context.Background(), g.sup.cfg.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.stop(drain)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
