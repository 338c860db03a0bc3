//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the CPU time pid has used, all its threads (exited ones
// too) and none of its children: utime+stime, read with ns resolution
// from the process's CPU clock (clock_getcpuclockid(3): Linux lets any
// process read another's). /proc/PID/stat fields 14 and 15 hold the same
// sum, but in 10 ms ticks, too coarse for one reload.
func processCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("process CPU clock: bad pid %d", pid)
	}
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's
	// posix-timers.h: the whole thread group's sum_exec_runtime.
	const cpuclockSched = 2
	clock := (^int32(pid))<<3 | cpuclockSched
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, fmt.Errorf("process CPU clock of %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// enableRecvTimestamps asks the kernel to stamp each datagram c receives
// with the time it was queued (SO_TIMESTAMPNS), so that a reader that is
// slow to be scheduled still learns when it arrived.
func enableRecvTimestamps(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
	}
	return nil
}

// recvTimestamp finds the SCM_TIMESTAMPNS stamp in a datagram's control
// messages.
func recvTimestamp(oob []byte) (time.Time, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, fmt.Errorf("control messages: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS {
			// struct timespec: two longs.
			switch d := m.Data; len(d) {
			case 16:
				return time.Unix(int64(binary.NativeEndian.Uint64(d)), int64(binary.NativeEndian.Uint64(d[8:]))), nil
			case 8:
				return time.Unix(int64(int32(binary.NativeEndian.Uint32(d))), int64(int32(binary.NativeEndian.Uint32(d[4:])))), nil
			}
			return time.Time{}, fmt.Errorf("SCM_TIMESTAMPNS of %d bytes", len(m.Data))
		}
	}
	return time.Time{}, errors.New("no SCM_TIMESTAMPNS")
}
