package systemd

import "golang.org/x/sys/unix"

// cloexecSocket and cloexecPipe make descriptors that are close-on-exec
// from the start: a worker started meanwhile must not inherit them (a
// barrier's pipe held open by a worker would never hang up).
func cloexecSocket(family, sotype int) (int, error) {
	return unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
}

func cloexecPipe() ([2]int, error) {
	var p [2]int
	err := unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p, err
}
