package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxActivationFds bounds LISTEN_FDS (systemd's own limit is the fd limit).
const maxActivationFds = 4096

// Socket is one descriptor passed by systemd socket activation.
type Socket struct {
	// Name is the unit's FileDescriptorName= (systemd defaults it to the
	// socket unit's name).
	Name string
	Fd   int
}

// ActivationSockets returns the sockets systemd passed to this process
// (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), marked close-on-exec, and
// removes those variables from the environment. It returns nothing when
// they are absent or meant for another process. Unlike go-systemd's
// activation.Files it keeps raw descriptors: wrapping a non-blocking
// socket in an os.File would register it with the runtime's poller, and
// the master must never be woken by connections.
func ActivationSockets() ([]Socket, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: not a number", fds)
	}
	if n > maxActivationFds {
		return nil, fmt.Errorf("LISTEN_FDS=%d: more than %d sockets", n, maxActivationFds)
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	socks := make([]Socket, n)
	for i := range socks {
		fd := 3 + i
		unix.CloseOnExec(fd)
		name := "unknown"
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		socks[i] = Socket{Name: name, Fd: fd}
	}
	return socks, nil
}
