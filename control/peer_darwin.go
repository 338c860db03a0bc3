package control

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// socketPeerUID is the uid of the process at the other end of a unix
// socket, from the kernel (LOCAL_PEERCRED).
func socketPeerUID(fd int) (uint32, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return 0, fmt.Errorf("LOCAL_PEERCRED: %w", err)
	}
	return cred.Uid, nil
}
