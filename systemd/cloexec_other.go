//go:build !linux

package systemd

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Without SOCK_CLOEXEC and pipe2, the fork lock keeps a child from being
// started between creating a descriptor and marking it close-on-exec.
func cloexecSocket(family, sotype int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(family, sotype, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}

func cloexecPipe() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return p, err
	}
	unix.CloseOnExec(p[0])
	unix.CloseOnExec(p[1])
	return p, nil
}
