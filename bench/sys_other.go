//go:build !linux

package main

import (
	"errors"
	"net"
	"time"
)

// The bench runs on Linux only (it reads /proc); these stubs keep it
// compiling elsewhere.

func processCPU(pid int) (time.Duration, error) {
	return 0, errors.New("process CPU clock: Linux only")
}

func enableRecvTimestamps(c *net.UnixConn) error { return nil }

func recvTimestamp(oob []byte) (time.Time, error) {
	return time.Time{}, errors.New("receive timestamps: Linux only")
}
