package control

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// socketPeerUID is the uid of the process at the other end of a unix
// socket, from the kernel (SO_PEERCRED).
func socketPeerUID(fd int) (uint32, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return cred.Uid, nil
}
