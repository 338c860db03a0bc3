//go:build linux

package control

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WaitExit returns once the process pid has exited, or with ctx's error.
// It waits on a pidfd, which becomes readable when the process exits: a
// zombie that its parent has not reaped yet counts as exited (kill(pid, 0)
// would go on succeeding for it), and a recycled pid cannot fool it once
// the pidfd is open. Kernels without pidfd_open (before 5.3) fall back to
// polling kill(pid, 0).
func WaitExit(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil // gone already
	case errors.Is(err, unix.ENOSYS):
		return pollKill(ctx, pid)
	case err != nil:
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd of %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
