package control

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// socketPeer is the uid and pid of the process at the other end of a
// unix socket, from the kernel (LOCAL_PEERCRED, LOCAL_PEERPID).
func socketPeer(fd int) (uid uint32, pid int32, err error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return 0, 0, fmt.Errorf("LOCAL_PEERCRED: %w", err)
	}
	p, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return 0, 0, fmt.Errorf("LOCAL_PEERPID: %w", err)
	}
	return cred.Uid, int32(p), nil
}
