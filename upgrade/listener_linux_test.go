package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/testutil"
)

func haveIPv6(t *testing.T) bool {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func getfl(t *testing.T, fd int) int {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL fd %d: %v", fd, err)
	}
	return fl
}

func isNonblock(t *testing.T, fd int) bool {
	t.Helper()
	return getfl(t, fd)&unix.O_NONBLOCK != 0
}

func isCloexec(t *testing.T, fd int) bool {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD fd %d: %v", fd, err)
	}
	return fl&unix.FD_CLOEXEC != 0
}

func setNonblock(t *testing.T, fd int) {
	t.Helper()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	if !isNonblock(t, fd) {
		t.Fatal("O_NONBLOCK did not stick")
	}
}

// polled returns the descriptors registered with the Go runtime's epoll
// instance(s), as the kernel reports them in /proc/self/fdinfo.
func polled(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	out := map[int]bool{}
	found := false
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.Contains(target, "eventpoll") {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		found = true
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					out[n] = true
				}
			}
		}
	}
	if !found {
		t.Skip("cannot see the runtime's epoll instance in /proc/self/fdinfo")
	}
	return out
}

// assertNotPolled checks that l's descriptor is not in the runtime poller:
// the kernel's epoll set does not hold it, and its os.File has no
// deadlines (which only pollable files support).
func assertNotPolled(t *testing.T, l *Listener) {
	t.Helper()
	if err := l.file.SetDeadline(time.Now().Add(time.Hour)); !errors.Is(err, os.ErrNoDeadline) {
		t.Errorf("File().SetDeadline = %v, want os.ErrNoDeadline: the file is pollable", err)
	}
	if polled(t)[l.Fd()] {
		t.Errorf("fd %d is registered with the runtime's epoll instance", l.Fd())
	}
}

// openCount is the number of this process's descriptors that refer to the
// same socket as fd.
func openCount(t *testing.T, fd int) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("socket:[%d]", st.Ino)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); target == want {
			n++
		}
	}
	return n
}

// acceptOne waits (up to 5 s) for a connection on the listening socket fd,
// whatever its blocking mode, and accepts it.
func acceptOne(t *testing.T, fd int) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.Poll(pfd, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll fd %d: %v", fd, err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection on fd %d within 5s", fd)
		}
	}
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept on fd %d: %v", fd, err)
	}
	unix.Close(nfd)
}

// dialAndAccept connects to addr and accepts the connection on fd.
func dialAndAccept(t *testing.T, network, addr string, fd int) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	acceptOne(t, fd)
}

// rawListener makes a listening socket without the net package.
func rawListener(t *testing.T, family, sotype int, sa unix.Sockaddr) int {
	t.Helper()
	fd, err := unix.Socket(family, sotype, 0)
	if err != nil {
		t.Skipf("socket(%d, %d): %v", family, sotype, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		t.Skipf("bind %v: %v", sa, err)
	}
	if sotype == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 16); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
	}
	return fd
}

func TestBindIP(t *testing.T) {
	v6 := haveIPv6(t)
	tests := []struct {
		spec     string
		family   int    // of the bound socket
		v6only   int    // IPV6_V6ONLY, for AF_INET6 sockets
		dial     string // host to dial
		needIPv6 bool
	}{
		{"a=tcp://127.0.0.1:0", unix.AF_INET, 0, "127.0.0.1", false},
		{"a=tcp4://127.0.0.1:0", unix.AF_INET, 0, "127.0.0.1", false},
		{"a=tcp4://:0", unix.AF_INET, 0, "127.0.0.1", false},
		{"a=tcp://localhost:0", unix.AF_INET, 0, "127.0.0.1", false},
		{"a=tcp6://[::1]:0", unix.AF_INET6, 1, "::1", true},
		{"a=tcp6://:0", unix.AF_INET6, 1, "::1", true},
		// A wildcard tcp listener is dual stack, as with net.Listen.
		{"a=tcp://:0", unix.AF_INET6, 0, "127.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			if tt.needIPv6 && !v6 {
				t.Skip("no IPv6 on this host")
			}
			spec, err := ParseSpec(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			l, err := Bind(spec)
			if err != nil {
				t.Fatalf("Bind(%v): %v", spec, err)
			}
			defer l.Close()
			if l.Spec != spec {
				t.Errorf("Spec = %+v, want %+v", l.Spec, spec)
			}
			host, port, err := net.SplitHostPort(l.Addr)
			if err != nil || port == "0" || port == "" {
				t.Fatalf("Addr = %q, want the bound host:port", l.Addr)
			}
			fd := l.Fd()
			if fd < 3 {
				t.Fatalf("Fd() = %d", fd)
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				t.Fatal(err)
			}
			switch tt.family {
			case unix.AF_INET:
				if _, ok := sa.(*unix.SockaddrInet4); !ok {
					t.Errorf("bound %T, want AF_INET", sa)
				}
			case unix.AF_INET6:
				if _, ok := sa.(*unix.SockaddrInet6); !ok {
					t.Errorf("bound %T, want AF_INET6", sa)
				}
				v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
				if err != nil || v != tt.v6only {
					t.Errorf("IPV6_V6ONLY = %d, %v; want %d", v, err, tt.v6only)
				}
			}
			if st, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); st != unix.SOCK_STREAM {
				t.Errorf("SO_TYPE = %d, want SOCK_STREAM", st)
			}
			if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
				t.Error("socket is not listening")
			}
			if ra, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR); ra == 0 {
				t.Error("SO_REUSEADDR is not set")
			}
			if isNonblock(t, fd) {
				t.Error("a bound listener is non-blocking; workers expect a blocking socket")
			}
			if !isCloexec(t, fd) {
				t.Error("listener is not close-on-exec")
			}
			if host == "" {
				t.Errorf("Addr %q has no host", l.Addr)
			}
			assertNotPolled(t, l)
			dialAndAccept(t, "tcp", net.JoinHostPort(tt.dial, port), fd)
			if isNonblock(t, l.Fd()) || isNonblock(t, int(l.file.Fd())) {
				t.Error("Fd changed the blocking mode")
			}
		})
	}
}

func TestBindUDP(t *testing.T) {
	l, err := Bind(Spec{Name: "dns", Network: "udp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fd := l.Fd()
	if st, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); st != unix.SOCK_DGRAM {
		t.Fatalf("SO_TYPE = %d, want SOCK_DGRAM", st)
	}
	if isNonblock(t, fd) {
		t.Error("udp socket is non-blocking")
	}
	assertNotPolled(t, l)
	c, err := net.Dial("udp", l.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(pfd, 5000); n != 1 || err != nil {
		t.Fatalf("poll: %d, %v", n, err)
	}
	buf := make([]byte, 16)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("recvfrom = %q, %v", buf[:n], err)
	}
}

func TestBindAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, err := Bind(Spec{Name: "a", Network: "tcp", Address: ln.Addr().String()})
	if err == nil {
		l.Close()
		t.Fatalf("Bind on %s, which is in use, succeeded", ln.Addr())
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Errorf("error %q does not say the address is in use", err)
	}
}

func TestBindUnix(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "s.sock")
	spec := Spec{Name: "s", Network: "unix", Address: path}

	l, err := Bind(spec)
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr != path {
		t.Errorf("Addr = %q, want %q", l.Addr, path)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is not a socket: %v, %v", path, fi, err)
	}
	if isNonblock(t, l.Fd()) {
		t.Error("unix listener is non-blocking")
	}
	assertNotPolled(t, l)
	dialAndAccept(t, "unix", path, l.Fd())

	// Close (a hand-over) leaves the path for the next master...
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed the socket path: %v", err)
	}

	// ...which the next Bind treats as stale, nothing accepting on it.
	l, err = Bind(spec)
	if err != nil {
		t.Fatalf("Bind over a stale socket: %v", err)
	}
	dialAndAccept(t, "unix", path, l.Fd())

	// Remove (final shutdown) removes it.
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Remove left %s: %v", path, err)
	}
}

func TestBindUnixStaleFromOtherProcess(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal("setup: no stale socket")
	}
	l, err := Bind(Spec{Name: "s", Network: "unix", Address: path})
	if err != nil {
		t.Fatalf("Bind over a stale socket: %v", err)
	}
	defer l.Remove()
	dialAndAccept(t, "unix", path, l.Fd())
}

func TestBindUnixLive(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, err := Bind(Spec{Name: "s", Network: "unix", Address: path})
	if err == nil {
		l.Close()
		t.Fatal("Bind replaced a socket another process accepts on")
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Errorf("error %q does not say the socket is in use", err)
	}
	// The live socket is untouched: still reachable at its path.
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("the live socket is gone: %v", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestBindUnixNotASocket(t *testing.T) {
	dir := testutil.ShortDir(t)
	for _, mk := range []struct {
		name string
		make func(path string) error
	}{
		{"file", func(p string) error { return os.WriteFile(p, []byte("keep"), 0o600) }},
		{"dir", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"symlink", func(p string) error { return os.Symlink("/nonexistent", p) }},
	} {
		t.Run(mk.name, func(t *testing.T) {
			path := filepath.Join(dir, mk.name)
			if err := mk.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			l, err := Bind(Spec{Name: "s", Network: "unix", Address: path})
			if err == nil {
				l.Close()
				t.Fatalf("Bind replaced a %s", mk.name)
			}
			if !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q does not say it is not a socket", err)
			}
			after, err := os.Lstat(path)
			if err != nil || after.Mode() != before.Mode() {
				t.Fatalf("the %s was changed: %v", mk.name, err)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "file")); string(b) != "keep" {
		t.Errorf("file content is now %q", b)
	}
}

func TestBindUnixRejectsNUL(t *testing.T) {
	dir := testutil.ShortDir(t)
	spec, err := ParseSpec("s=unix://" + dir + "/a%00b")
	if err != nil {
		return // rejected up front: fine too
	}
	l, err := Bind(spec)
	if err == nil {
		l.Remove()
		t.Fatalf("Bind(%q) succeeded", spec.Address)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Bind left %s/%s behind", dir, ents[0].Name())
	}
}

// TestFromFdKeepsBlockingMode adopts listening sockets in both modes: the
// shared open file description must keep its O_NONBLOCK flag (workers
// share it), the listener must stay out of the runtime poller, and
// neither Listener.Fd nor os.File.Fd may change the flag.
func TestFromFdKeepsBlockingMode(t *testing.T) {
	for _, nonblock := range []bool{true, false} {
		t.Run(fmt.Sprintf("nonblock=%v", nonblock), func(t *testing.T) {
			fd := rawListener(t, unix.AF_INET, unix.SOCK_STREAM, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			if nonblock {
				setNonblock(t, fd)
			}
			if isCloexec(t, fd) {
				t.Fatal("setup: fd is close-on-exec already")
			}
			addr := sockname(t, fd)
			l, err := fromFd(Spec{Name: "http"}, fd)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			check := func(when string) {
				t.Helper()
				if got := isNonblock(t, l.Fd()); got != nonblock {
					t.Fatalf("%s: O_NONBLOCK = %v, want %v", when, got, nonblock)
				}
			}
			check("after fromFd")
			if got := int(l.file.Fd()); got != l.Fd() {
				t.Errorf("File().Fd() = %d, Fd() = %d", got, l.Fd())
			}
			check("after File().Fd()")
			check("after Fd()")
			assertNotPolled(t, l)
			check("after SetDeadline")
			if !isCloexec(t, l.Fd()) {
				t.Error("adopted fd is not close-on-exec")
			}
			if n := openCount(t, l.Fd()); n != 1 {
				t.Errorf("%d descriptors refer to the socket after fromFd, want 1 (the original leaked or was lost)", n)
			}
			// It is the same socket, and it still accepts.
			dialAndAccept(t, "tcp", addr, l.Fd())
			check("after accept")
			checkAdopted(t, l, "tcp", addr, nonblock)
		})
	}
}

// sockname is fd's bound address, as Listener.Addr renders it.
func sockname(t *testing.T, fd int) string {
	t.Helper()
	a := localAddr(fd, Spec{})
	if a == "" {
		t.Fatalf("getsockname fd %d failed", fd)
	}
	return a
}

// knownBugNonblockAddr is the fromFd bug this package's tests found: for a
// non-blocking socket, newBlockingFile moves the socket to another
// descriptor number and closes fd, and fromFd then calls networkOf and
// localAddr on the closed fd.
// checkAdopted checks the network and address fromFd found for a socket
// adopted with an empty spec.
func checkAdopted(t *testing.T, l *Listener, network, addr string, nonblock bool) {
	t.Helper()
	if l.Network == network && l.Addr == addr && l.Address == addr {
		return
	}
	msg := fmt.Sprintf("Network, Addr, Address = %q, %q, %q; want %q, %q, %q", l.Network, l.Addr, l.Address, network, addr, addr)
	t.Error(msg)
}

func TestFromFdNetwork(t *testing.T) {
	dir := testutil.ShortDir(t)
	tests := []struct {
		name    string
		family  int
		sotype  int
		sa      func() unix.Sockaddr
		network string
	}{
		{"tcp4", unix.AF_INET, unix.SOCK_STREAM, func() unix.Sockaddr { return &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}} }, "tcp"},
		{"tcp6", unix.AF_INET6, unix.SOCK_STREAM, func() unix.Sockaddr { return &unix.SockaddrInet6{Addr: [16]byte{15: 1}} }, "tcp6"},
		{"udp4", unix.AF_INET, unix.SOCK_DGRAM, func() unix.Sockaddr { return &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}} }, "udp"},
		{"udp6", unix.AF_INET6, unix.SOCK_DGRAM, func() unix.Sockaddr { return &unix.SockaddrInet6{Addr: [16]byte{15: 1}} }, "udp"},
		{"unix", unix.AF_UNIX, unix.SOCK_STREAM, nil, "unix"},
	}
	for _, tt := range tests {
		for _, nonblock := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/nonblock=%v", tt.name, nonblock), func(t *testing.T) {
				var sa unix.Sockaddr
				path := filepath.Join(dir, fmt.Sprintf("%s-%v.sock", tt.name, nonblock))
				if tt.sa != nil {
					sa = tt.sa()
				} else {
					sa = &unix.SockaddrUnix{Name: path}
				}
				sotype := tt.sotype
				if nonblock {
					sotype |= unix.SOCK_NONBLOCK
				}
				fd := rawListener(t, tt.family, sotype, sa)
				addr := sockname(t, fd)
				l, err := fromFd(Spec{Name: tt.name}, fd)
				if err != nil {
					t.Fatal(err)
				}
				if got := isNonblock(t, l.Fd()); got != nonblock {
					t.Errorf("O_NONBLOCK = %v, want %v", got, nonblock)
				}
				assertNotPolled(t, l)
				// An adopted unix socket belongs to whoever created it:
				// Remove closes it but leaves the path.
				if err := l.Remove(); err != nil {
					t.Fatal(err)
				}
				if tt.sa == nil {
					if _, err := os.Lstat(path); err != nil {
						t.Errorf("Remove of an adopted unix socket removed its path: %v", err)
					}
				}
				checkAdopted(t, l, tt.network, addr, nonblock)
			})
		}
	}
}

// TestFromFdKeepsSpec adopts a socket for a parsed spec, as the master does
// with activated and handed-over sockets: the spec stays as given and Addr
// is where the socket is really bound.
func TestFromFdKeepsSpec(t *testing.T) {
	for _, nonblock := range []bool{false, true} {
		t.Run(fmt.Sprintf("nonblock=%v", nonblock), func(t *testing.T) {
			sotype := unix.SOCK_STREAM
			if nonblock {
				sotype |= unix.SOCK_NONBLOCK
			}
			fd := rawListener(t, unix.AF_INET, sotype, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			addr := sockname(t, fd)
			spec := Spec{Name: "web", Network: "tcp4", Address: "127.0.0.1:0"}
			l, err := fromFd(spec, fd)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Spec != spec {
				t.Errorf("Spec = %+v, want %+v unchanged", l.Spec, spec)
			}
			if l.Addr != addr {
				t.Errorf("Addr = %q, want the bound address %q", l.Addr, addr)
			}
		})
	}
}

func TestFromFdNotASocket(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	l, err := fromFd(Spec{Name: "x"}, p[0])
	if err == nil {
		l.Close()
		t.Fatal("fromFd adopted a pipe")
	}
	if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("error %q does not say it is not a socket", err)
	}
	// fromFd owns the descriptor even on error: the read end is closed,
	// so writing to the pipe fails with EPIPE.
	if _, err := unix.Write(p[1], []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Errorf("write to the pipe: %v, want EPIPE (the read end was not closed)", err)
	}
}

// TestFromFdLiveListener adopts a duplicate of a live net.Listener's
// socket, as a new master does with the descriptors handed over: the
// net.Listener's non-blocking description must not change.
func TestFromFdLiveListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dup, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(dup, true) // f.Fd() made the description blocking
	l, err := fromFd(Spec{Name: "http", Network: "tcp", Address: ln.Addr().String()}, dup)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !isNonblock(t, l.Fd()) {
		t.Fatal("fromFd cleared O_NONBLOCK on the shared description")
	}
	if l.Addr != ln.Addr().String() {
		t.Errorf("Addr = %q, want %q", l.Addr, ln.Addr())
	}
	if !isCloexec(t, l.Fd()) {
		t.Error("adopted fd is not close-on-exec")
	}
	if l.Fd() < 3 {
		t.Errorf("Fd() = %d, want >= 3", l.Fd())
	}
	assertNotPolled(t, l)
	// The net.Listener still works with deadlines (it is still non-blocking).
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("the original listener broke: %v", err)
	}
	a.Close()
	// The adopted descriptor outlives the originals.
	f.Close()
	ln.Close()
	dialAndAccept(t, "tcp", l.Addr, l.Fd())
	if !isNonblock(t, l.Fd()) {
		t.Error("O_NONBLOCK was cleared")
	}
}

func TestBacklog(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Skip(err)
	}
	want, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if got := backlog(); got != want {
		t.Errorf("backlog() = %d, want somaxconn %d", got, want)
	}
}
