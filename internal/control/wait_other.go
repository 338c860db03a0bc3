//go:build !linux

package control

import "context"

// WaitExit returns once the process pid has exited, or with ctx's error.
// Without pidfds it polls kill(pid, 0), which also waits for a zombie.
func WaitExit(ctx context.Context, pid int) error {
	return pollKill(ctx, pid)
}
