package upgrade

import "golang.org/x/sys/unix"

// The descriptor calls below are atomic about close-on-exec on Linux;
// sys_other.go has their two-step forms for other systems, where handoff
// builds (for development) but does not run workers.

func socket(family, sotype int) (int, error) {
	return unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
}

func socketpair(family, sotype int) ([2]int, error) {
	return unix.Socketpair(family, sotype|unix.SOCK_CLOEXEC, 0)
}

func pipe(p []int) error { return unix.Pipe2(p, unix.O_CLOEXEC) }

func dupOnto(old, new int) error { return unix.Dup3(old, new, unix.O_CLOEXEC) }

const recvCloexec = unix.MSG_CMSG_CLOEXEC
