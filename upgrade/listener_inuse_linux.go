//go:build linux

package upgrade

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrAddressInUse means another socket listens on (or, for UDP, is bound
// to) an address that overlaps the one asked for.
var ErrAddressInUse = errors.New("address in use")

// CheckFree tells whether a TCP or UDP socket of type sotype could be the
// only one on sa: it binds a plain socket there (no SO_REUSEPORT, so it
// joins no group; SO_REUSEADDR for TCP, so connections in TIME_WAIT do not
// count) and closes it at once. The kernel's bind check covers wildcard
// overlaps (0.0.0.0 and 127.0.0.1 on one port) and IPv4 on a dual-stack
// IPv6 wildcard. A conflict is an error wrapping ErrAddressInUse that
// names the address and, where /proc shows it, the process holding it.
// Port 0 is always free.
func CheckFree(sotype, v6only int, sa unix.Sockaddr) error {
	family := unix.AF_INET
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if a.Port == 0 {
			return nil
		}
	case *unix.SockaddrInet6:
		if a.Port == 0 {
			return nil
		}
		family = unix.AF_INET6
	default:
		return fmt.Errorf("check %v: not an IP address", sa)
	}
	fd, err := socket(family, sotype)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if sotype == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
		}
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fmt.Errorf("setsockopt IPV6_V6ONLY: %w", err)
		}
	}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) {
		return InUse(sotype, v6only, sa, nil)
	}
	if err != nil {
		return fmt.Errorf("bind %s: %w", sockaddrText(sa), err)
	}
	return nil
}

// InUse is the error for an address that another socket holds: it names
// the address and, best effort, the processes that hold the sockets
// overlapping it, other than those whose inodes are in ours.
func InUse(sotype, v6only int, sa unix.Sockaddr, ours []uint64) error {
	who := ""
	if inodes, err := Overlapping(sotype, v6only, sa); err == nil {
		inodes = slices.DeleteFunc(inodes, func(i uint64) bool { return slices.Contains(ours, i) })
		who = Owners(inodes)
	}
	if who != "" {
		return fmt.Errorf("address %s is already in use by %s: %w", sockaddrText(sa), who, ErrAddressInUse)
	}
	return fmt.Errorf("address %s is already in use by another socket: %w", sockaddrText(sa), ErrAddressInUse)
}

// SocketInode is the inode number of the socket fd, as /proc/net lists it.
func SocketInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("fstat: %w", err)
	}
	return st.Ino, nil
}

// procEntry is a socket in /proc/net/{tcp,tcp6,udp,udp6}.
type procEntry struct {
	ip    net.IP // 4 or 16 bytes
	port  int
	inode uint64
}

// Overlapping lists the inodes of the sockets in this network namespace
// (from sock_diag, else /proc/net)
// that listen (TCP) or are bound unconnected (UDP) on an address whose
// traffic overlaps sa's: the same address and port, or the same port with
// either address a wildcard of the same family. An IPv4 socket overlaps a
// dual-stack IPv6 wildcard (v6only 0). An IPv6 wildcard overlaps an IPv4
// address only if it is dual-stack, which /proc/net does not show: such a
// socket is not listed for an IPv4 sa.
func Overlapping(sotype, v6only int, sa unix.Sockaddr) ([]uint64, error) {
	var (
		ip   net.IP
		port int
	)
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = net.IP(a.Addr[:]).To4(), a.Port
	case *unix.SockaddrInet6:
		ip, port = net.IP(a.Addr[:]), a.Port
		if v4 := ip.To4(); v4 != nil {
			ip = v4 // a v4-mapped address is an IPv4 one
		}
	default:
		return nil, fmt.Errorf("not an IP address: %v", sa)
	}
	proto, state, diagState := "tcp", "0A", uint8(10) // TCP_LISTEN
	if sotype == unix.SOCK_DGRAM {
		proto, state, diagState = "udp", "07", 7 // TCP_CLOSE: unconnected
	}
	var out []uint64
	for _, suffix := range []string{"", "6"} {
		family := unix.AF_INET
		if suffix == "6" {
			family = unix.AF_INET6
		}
		es, err := diagSockets(family, sotype, diagState)
		if err != nil {
			// No sock_diag (udp_diag not loaded, say): /proc/net lists
			// every socket, connections included, which is slower.
			es, err = readProcNet("/proc/net/"+proto+suffix, state)
		}
		if err != nil {
			if suffix == "6" && errors.Is(err, os.ErrNotExist) {
				continue // no IPv6
			}
			return nil, err
		}
		for _, e := range es {
			if e.port == port && overlaps(ip, v6only, e.ip) {
				out = append(out, e.inode)
			}
		}
	}
	return out, nil
}

// overlaps says whether a socket on other takes traffic for ours (its
// port being the same). ours is 4 bytes for IPv4 (v4-mapped included).
func overlaps(ours net.IP, v6only int, other net.IP) bool {
	if v4 := other.To4(); v4 != nil {
		other = v4
	}
	ours4, other4 := len(ours) == net.IPv4len, len(other) == net.IPv4len
	switch {
	case ours4 && other4, !ours4 && !other4:
		return ours.Equal(other) || ours.IsUnspecified() || other.IsUnspecified()
	case !ours4 && other4:
		// A dual-stack wildcard takes every IPv4 address.
		return ours.IsUnspecified() && v6only == 0
	}
	return false // an IPv6 socket and our IPv4 address: see Overlapping
}

// readProcNet parses a /proc/net table, keeping the sockets in state.
func readProcNet(path, state string) ([]procEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []procEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != state {
			continue
		}
		ip, port, ok := parseHexAddr(f[1])
		if !ok {
			continue
		}
		if state == "07" {
			if _, rport, ok := parseHexAddr(f[2]); !ok || rport != 0 {
				continue // a connected UDP socket
			}
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || ino == 0 {
			continue
		}
		out = append(out, procEntry{ip: ip, port: port, inode: ino})
	}
	return out, sc.Err()
}

// parseHexAddr reads "0100007F:1F90": the address as 32-bit words printed
// in hex (%08X) from memory in host byte order, then the port in hex.
func parseHexAddr(s string) (net.IP, int, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, false
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, 0, false
	}
	return ip, int(port), true
}

// Owners names the processes holding sockets with these inodes, as
// "pid 123 (nginx)" joined by ", ", from /proc/*/fd: best effort, only
// the processes this one may inspect; "" if none is found.
func Owners(inodes []uint64) string {
	if len(inodes) == 0 {
		return ""
	}
	want := map[string]bool{}
	for _, i := range inodes {
		want["socket:["+strconv.FormatUint(i, 10)+"]"] = true
	}
	procs, _ := os.ReadDir("/proc")
	var found []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && want[target] {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				found = append(found, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
		if len(found) == 4 {
			found = append(found, "…")
			break
		}
	}
	return strings.Join(found, ", ")
}

func sockaddrText(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return fmt.Sprint(sa)
}
