//go:build !linux

package upgrade

import "golang.org/x/sys/unix"

func socket(family, sotype int) (int, error) {
	fd, err := unix.Socket(family, sotype, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}

func socketpair(family, sotype int) ([2]int, error) {
	p, err := unix.Socketpair(family, sotype, 0)
	if err == nil {
		unix.CloseOnExec(p[0])
		unix.CloseOnExec(p[1])
	}
	return p, err
}

func pipe(p []int) error {
	err := unix.Pipe(p)
	if err == nil {
		unix.CloseOnExec(p[0])
		unix.CloseOnExec(p[1])
	}
	return err
}

func dupOnto(old, new int) error {
	err := unix.Dup2(old, new)
	if err == nil {
		unix.CloseOnExec(new)
	}
	return err
}

const recvCloexec = 0
