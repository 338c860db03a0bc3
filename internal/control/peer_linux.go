package control

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// socketPeer is the uid and pid of the process at the other end of a
// unix socket, from the kernel (SO_PEERCRED: as they were at connect).
func socketPeer(fd int) (uid uint32, pid int32, err error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return cred.Uid, cred.Pid, nil
}
