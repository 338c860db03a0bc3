package systemd

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells systemd about the master through sd_notify(3). Without
// NOTIFY_SOCKET (not run by systemd) every call does nothing.
type Notifier struct {
	mu         sync.Mutex
	lastStatus string
}

// NewNotifier returns a notifier for the master's own NOTIFY_SOCKET.
func NewNotifier() *Notifier { return &Notifier{} }

// Enabled reports whether systemd listens.
func (n *Notifier) enabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// send sends the assignments in one datagram.
func (n *Notifier) send(fields ...string) error {
	if !n.enabled() {
		return nil
	}
	if _, err := daemon.SdNotify(false, strings.Join(fields, "\n")); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Status sends STATUS=s unless it is what was sent last.
func (n *Notifier) Status(s string) error {
	n.mu.Lock()
	same := s == n.lastStatus
	n.lastStatus = s
	n.mu.Unlock()
	if same {
		return nil
	}
	return n.send("STATUS=" + s)
}

func (n *Notifier) withStatus(status string, fields ...string) error {
	n.mu.Lock()
	n.lastStatus = status
	n.mu.Unlock()
	return n.send(append(fields, "STATUS="+status)...)
}

// Ready sends READY=1: startup is over, or a reload is (whatever its
// outcome).
func (n *Notifier) Ready(status string) error {
	return n.withStatus(status, "READY=1")
}

// ReadyAsMain sends MAINPID=<this process> with READY=1: a new master
// taking over from the old one. With NotifyAccess=main, systemd takes it
// only once the old master has named this one the main process
// (MainPID); with NotifyAccess=all, from any process of the unit.
func (n *Notifier) ReadyAsMain(status string) error {
	return n.withStatus(status, "MAINPID="+strconv.Itoa(os.Getpid()), "READY=1")
}

// MainPID sends MAINPID=pid: the old master, still the unit's main
// process, names its successor, so that systemd takes the successor's
// notifications under NotifyAccess=main.
func (n *Notifier) MainPID(pid int) error {
	return n.send("MAINPID=" + strconv.Itoa(pid))
}

// Reloading sends RELOADING=1 with the CLOCK_MONOTONIC time, as
// Type=notify-reload units require.
func (n *Notifier) Reloading(status string) error {
	return n.withStatus(status, "RELOADING=1", daemon.SdNotifyMonotonicUsec())
}

// Stopping sends STOPPING=1 and asks for extra stop time to drain.
func (n *Notifier) Stopping(status string, drain time.Duration) error {
	return n.withStatus(status, "STOPPING=1", extendTimeout(drain))
}

// Watchdog sends WATCHDOG=1.
func (n *Notifier) Watchdog() error {
	return n.send("WATCHDOG=1")
}

func extendTimeout(d time.Duration) string {
	return "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10)
}

// WatchdogInterval returns how often to send WATCHDOG=1 (half of
// WATCHDOG_USEC), or 0 when systemd expects no pings from this process.
// A master that took over from an older one (inherited is true) owns the
// watchdog even though WATCHDOG_PID still names its predecessor: it
// announced itself with MAINPID=.
func WatchdogInterval(inherited bool) (time.Duration, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("WATCHDOG_USEC=%q: not a positive number", usec)
	}
	if n > math.MaxInt64/int64(time.Microsecond) {
		return 0, fmt.Errorf("WATCHDOG_USEC=%q: too large", usec)
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && !inherited && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}
