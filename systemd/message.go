package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// maxMessage is the largest notify datagram accepted, the same limit
// systemd applies (PID1's NOTIFY_BUFFER_MAX).
const maxMessage = 4096

// Message is what one notify datagram said. Fields that were not present
// are zero; fields handoff has no use for are ignored.
type Message struct {
	Ready    bool
	Stopping bool
	// Status is the STATUS= text, if the datagram had one.
	Status    string
	HasStatus bool
	// Watchdog is WATCHDOG=1, a keep-alive ping; WatchdogTrigger is
	// WATCHDOG=trigger, the service asking to be treated as failed.
	Watchdog        bool
	WatchdogTrigger bool
}

// parseMessage parses one sd_notify datagram: newline-separated
// VARIABLE=VALUE assignments, as sd_notify(3) describes. It rejects what
// systemd would: oversized, non-UTF-8 or NUL-carrying datagrams, and lines
// that are not assignments.
func parseMessage(b []byte) (Message, error) {
	var m Message
	switch {
	case len(b) == 0:
		return m, errors.New("empty datagram")
	case len(b) > maxMessage:
		return m, fmt.Errorf("datagram of %d bytes exceeds %d", len(b), maxMessage)
	case bytes.IndexByte(b, 0) >= 0:
		return m, errors.New("datagram contains NUL bytes")
	case !utf8.Valid(b):
		return m, errors.New("datagram is not UTF-8")
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		key, val, ok := bytes.Cut(line, []byte{'='})
		if !ok || len(key) == 0 {
			return Message{}, fmt.Errorf("line %q is not VARIABLE=VALUE", truncate(line, 40))
		}
		switch string(key) {
		case "READY":
			m.Ready = string(val) == "1"
		case "STOPPING":
			m.Stopping = string(val) == "1"
		case "STATUS":
			m.Status, m.HasStatus = string(val), true
		case "WATCHDOG":
			m.Watchdog = string(val) == "1"
			m.WatchdogTrigger = string(val) == "trigger"
		}
	}
	return m, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
