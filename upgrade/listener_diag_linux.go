//go:build linux

package upgrade

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// diagSockets asks the kernel (sock_diag, NETLINK_INET_DIAG) for the
// sockets of one family and transport in state: TCP listeners (the
// kernel then walks only its listening hash, so a host with a million
// connections costs nothing) or unconnected UDP sockets. It is what
// /proc/net/{tcp,udp}{,6} shows, without reading every connection.
func diagSockets(family, sotype int, state uint8) ([]procEntry, error) {
	proto := uint8(unix.IPPROTO_TCP)
	if sotype == unix.SOCK_DGRAM {
		proto = unix.IPPROTO_UDP
	}
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	// struct nlmsghdr, then struct inet_diag_req_v2 (its sockid zeroed).
	req := make([]byte, unix.NLMSG_HDRLEN+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = uint8(family), proto
	binary.NativeEndian.PutUint32(r[4:], 1<<state)
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag send: %w", err)
	}
	var out []procEntry
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno < 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil, errors.New("sock_diag: error message")
			}
			// struct inet_diag_msg: family, state, timer, retrans,
			// sockid (sport, dport, src[16], dst[16], if, cookie),
			// expires, rqueue, wqueue, uid, inode.
			d := m.Data
			if len(d) < 72 || d[1] != state {
				continue
			}
			if binary.BigEndian.Uint16(d[6:]) != 0 {
				continue // connected (UDP)
			}
			ip := net.IP(append([]byte(nil), d[8:24]...))
			if d[0] == unix.AF_INET {
				ip = ip[:4]
			}
			out = append(out, procEntry{
				ip:    ip,
				port:  int(binary.BigEndian.Uint16(d[4:])),
				inode: uint64(binary.NativeEndian.Uint32(d[68:])),
			})
		}
	}
}
