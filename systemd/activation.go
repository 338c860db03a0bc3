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

// Bounds on what a restarted service can be passed back: at most
// MaxPassed descriptors (ActivationSockets refuses more), whose names
// take at most MaxPassedNames bytes (LISTEN_FDNAMES is one environment
// string, which the kernel caps at 128 KiB: beyond it systemd's exec of
// the service fails).
const (
	MaxPassed      = maxActivationFds
	MaxPassedNames = 120 << 10
)

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
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	socks, err := parseActivation(pid, fds, names, os.Getpid())
	if err != nil {
		return nil, err
	}
	for _, s := range socks {
		unix.CloseOnExec(s.Fd)
	}
	return socks, nil
}

// parseActivation reads the activation variables LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES (pid, fds and names) for the process self, touching
// no descriptor: nothing when they are absent or meant for another
// process, else one Socket per descriptor from 3 on, named by its entry
// in the colon-separated names ("unknown" where there is none).
func parseActivation(pid, fds, names string, self int) ([]Socket, error) {
	if pid == "" || fds == "" || pid != strconv.Itoa(self) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: not a number", truncate([]byte(fds), 40))
	}
	if n > maxActivationFds {
		return nil, fmt.Errorf("LISTEN_FDS=%d: more than %d sockets", n, maxActivationFds)
	}
	split := strings.Split(names, ":")
	socks := make([]Socket, n)
	for i := range socks {
		name := "unknown"
		if i < len(split) && split[i] != "" {
			name = split[i]
		}
		socks[i] = Socket{Name: name, Fd: 3 + i}
	}
	return socks, nil
}
