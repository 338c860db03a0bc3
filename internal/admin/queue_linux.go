//go:build linux

package admin

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h

// socketQueue returns what waits on a shared listening socket, measured
// as the steered sockets are (steer.Group.QueueLen): for TCP, the
// connections in its accept queue (TCP_INFO tcpi_unacked of a
// listener); for UDP, the receive memory its queued datagrams take
// (SO_MEMINFO rmem_alloc). Unix sockets are not measured.
func socketQueue(fd int) (int, error) {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return 0, errors.New("not an IP socket")
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, fmt.Errorf("getsockopt SO_TYPE: %w", err)
	}
	if typ == unix.SOCK_DGRAM {
		var mem [unix.SK_MEMINFO_VARS]uint32
		l := uint32(unsafe.Sizeof(mem))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return 0, fmt.Errorf("getsockopt SO_MEMINFO: %w", e)
		}
		return int(mem[unix.SK_MEMINFO_RMEM_ALLOC]), nil
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("getsockopt TCP_INFO: %w", err)
	}
	if info.State != tcpListen {
		return 0, errors.New("not listening")
	}
	return int(info.Unacked), nil
}
