package control

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// pollKill waits until kill(pid, 0) says no such process. EPERM means the
// process exists (another user's).
func pollKill(ctx context.Context, pid int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
