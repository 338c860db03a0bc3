package master

import (
	"bytes"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/logsink"
)

// minUptime is workers.Config.MinUptime for o: negative means no
// probation (--min-uptime 0), where zero would mean the default.
func minUptime(o *config.Options) time.Duration {
	if o.MinUptime == 0 {
		return -1
	}
	return o.MinUptime
}

// newLogger makes the master's logger; mu is the lock it takes around
// each line, which the workers' forwarded output takes too. Its output
// is stderr through a log sink (newLogSink), unless stderr is one
// already: a log reader that goes away must not stop the master.
func newLogger(o *config.Options, stderr io.Writer, mu sync.Locker) hclog.Logger {
	if _, ok := stderr.(*logsink.Writer); !ok {
		stderr = newLogSink(o, stderr)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "handoff",
		Level:      hclog.LevelFromString(o.LogLevel),
		JSONFormat: o.LogFormat == "json",
		Output:     stderr,
		Color:      hclog.AutoColor,
		Mutex:      mu,
	})
}

// sigpipe is where SIGPIPE goes: nowhere (see newLogSink).
var (
	sigpipeOnce sync.Once
	sigpipe     = make(chan os.Signal, 1)
)

// newLogSink wraps the master's stderr so that its failing never stops
// the master: the lines the output refuses are counted and dropped
// (Dropped, for handoff_log_lines_dropped_total) and a line in the
// log's format says how many once it takes lines again. It also
// handles SIGPIPE, which otherwise kills a Go program whose write to fd
// 1 or 2 meets a pipe without reader (`handoff run … 2>&1 | head`, a
// journald stream gone): with it handled, the write returns EPIPE.
// Handled, not ignored: an ignored signal stays ignored in the workers.
func newLogSink(o *config.Options, stderr io.Writer) *logsink.Writer {
	sigpipeOnce.Do(func() { signal.Notify(sigpipe, syscall.SIGPIPE) })
	json := o.LogFormat == "json"
	return logsink.New(stderr, logsink.Options{
		Notice: func(dropped uint64, kept int, err error) []byte {
			var b bytes.Buffer
			hclog.New(&hclog.LoggerOptions{Name: "handoff", JSONFormat: json, Output: &b, Color: hclog.ColorOff}).
				Warn("log output failed: lines dropped", "dropped", dropped, "kept_lines_follow", kept, "error", err)
			return b.Bytes()
		},
	})
}

// closeInheritedFds marks every descriptor from 3 up close-on-exec: Go's
// exec does not close stray descriptors, and whatever the master inherited
// must not leak into workers. Descriptors handoff passes on are given to
// workers explicitly.
func closeInheritedFds() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
}
