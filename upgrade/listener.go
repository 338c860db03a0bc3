package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/sockaddr"
)

// Listener is a socket the master holds for its whole life and passes to
// every worker. Its descriptor is in blocking mode when created and is never
// registered with the Go runtime's poller, so the master is not woken by
// connections: only workers accept on it.
type Listener struct {
	Spec
	// Addr is the bound address, with the real port when the spec asked
	// for port 0.
	Addr string
	file *os.File
	// unlink is set for unix sockets this process created: the path is
	// removed when the master shuts down (but not when it hands over).
	unlink bool
}

// Fd returns the descriptor to pass to workers. It does not change the
// descriptor's blocking mode (unlike os.File.Fd on a pollable file).
func (l *Listener) Fd() int {
	var fd int
	rc, err := l.file.SyscallConn()
	if err != nil {
		return -1
	}
	_ = rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// Close closes the master's descriptor. Workers' copies stay open.
func (l *Listener) Close() error {
	return l.file.Close()
}

// Remove closes the listener and, for a unix socket this master created,
// removes its path. Use it on final shutdown, not on a hand-over.
func (l *Listener) Remove() error {
	err := l.Close()
	if l.unlink {
		if rerr := os.Remove(l.Address); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// Bind creates, binds and (for stream sockets) listens on the socket that
// spec describes. A unix socket path left behind by a dead process is
// removed first; one that still accepts connections is an error.
func Bind(spec Spec) (*Listener, error) {
	return BindWith(spec, NoOwner)
}

// BindWith is Bind with the mode and owner of a unix socket's file (see
// BindUnix); opts are ignored for other networks.
func BindWith(spec Spec, opts UnixOptions) (*Listener, error) {
	var (
		fd  int
		err error
	)
	switch spec.Network {
	case "unix":
		fd, err = BindUnix(spec.Address, opts)
	default:
		fd, err = bindIP(spec)
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	l := &Listener{Spec: spec, file: os.NewFile(uintptr(fd), spec.Name), unlink: spec.Network == "unix"}
	l.Addr = localAddr(fd, spec)
	return l, nil
}

// fromFd adopts descriptor fd, which the Listener then owns. Passing it to
// os.NewFile would register a non-blocking socket with the poller, so the
// file is created around a descriptor with the mode hidden: the os package
// only looks at the mode when the file is created.
func fromFd(spec Spec, fd int) (*Listener, error) {
	st, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("adopt %s: fd %d is not a socket: %w", spec.Name, fd, err)
	}
	unix.CloseOnExec(fd)
	l := &Listener{Spec: spec}
	if spec.Network == "" {
		l.Network = networkOf(fd, st)
	}
	l.Addr = localAddr(fd, l.Spec)
	if l.Address == "" {
		l.Address = l.Addr
	}
	// Last: newBlockingFile may move the socket to another descriptor.
	l.file = newBlockingFile(fd, spec.Name)
	return l, nil
}

// newBlockingFile wraps fd in an os.File that is not registered with the
// poller, without changing the blocking mode of the shared open file
// description: os.NewFile is given a blocking duplicate, and the original
// descriptor number is then made to refer to the same socket again.
func newBlockingFile(fd int, name string) *os.File {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK == 0 {
		return os.NewFile(uintptr(fd), name)
	}
	// os.NewFile asks F_GETFL whether fd is non-blocking. A socket opened
	// afresh through /proc has its own open file description, but that is
	// not possible for sockets, so instead let os.NewFile see an fd that
	// is not open yet: reserve the number with a blocking pipe end,
	// create the file, then dup2 the socket over it.
	var p [2]int
	if err := pipe(p[:]); err != nil {
		return os.NewFile(uintptr(fd), name)
	}
	unix.Close(p[1])
	f := os.NewFile(uintptr(p[0]), name)
	if err := dupOnto(fd, p[0]); err != nil {
		f.Close()
		return os.NewFile(uintptr(fd), name)
	}
	unix.Close(fd)
	return f
}

func networkOf(fd, sotype int) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "unknown"
	}
	switch sa.(type) {
	case *unix.SockaddrUnix:
		return "unix"
	case *unix.SockaddrInet6:
		if sotype == unix.SOCK_DGRAM {
			return "udp"
		}
		return "tcp6"
	default:
		if sotype == unix.SOCK_DGRAM {
			return "udp"
		}
		return "tcp"
	}
}

func localAddr(fd int, spec Spec) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return spec.Address
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), fmt.Sprint(a.Port))
	case *unix.SockaddrUnix:
		if spec.Address != "" {
			// BindUnix binds in a private directory and renames the
			// socket into place: the kernel keeps the name it was
			// bound with.
			return spec.Address
		}
		return a.Name
	}
	return spec.Address
}

func bindIP(spec Spec) (int, error) {
	a, err := sockaddr.Resolve(spec.Network, spec.Address)
	if err != nil {
		return -1, err
	}
	fd, err := socket(a.Family, a.Type)
	if err != nil && a.DualStack {
		a = a.IPv4() // no IPv6 on this host
		fd, err = socket(a.Family, a.Type)
	}
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if a.Type == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("setsockopt SO_REUSEADDR", err)
		}
	}
	if a.Family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, a.V6Only); err != nil {
			return fail("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, a.Sockaddr); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			unix.Close(fd)
			return -1, InUse(a.Type, a.V6Only, a.Sockaddr, nil)
		}
		return fail("bind", err)
	}
	if a.Type == unix.SOCK_STREAM {
		if err := unix.Listen(fd, backlog()); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}

// ErrSocketInUse means a unix socket path has a live listener.
var ErrSocketInUse = errors.New("another process accepts on it")

// RemoveStaleSocket removes a unix socket at path that nothing listens on
// (left by a process that died). A live socket (ErrSocketInUse), or a path
// that is not a socket, is an error and is left alone.
func RemoveStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("address %s is already in use: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check stale socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// backlog returns the listen backlog: the kernel's maximum, so that
// connections queue while no worker is accepting instead of being refused.
func backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}
