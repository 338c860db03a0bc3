package systemd

import (
	"net"

	"golang.org/x/sys/unix"
)

// oobSize holds one SCM_CREDENTIALS message: any more control data (file
// descriptors) is truncated away, and the kernel closes those.
var oobSize = unix.CmsgSpace(unix.SizeofUcred)

// passCred asks the kernel to attach each sender's credentials.
func passCred(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}

// senderPID is the pid of an SCM_CREDENTIALS message in oob, or 0.
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}
