package main

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// envOfPID reads one variable of a process's environment.
func envOfPID(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// A process outside a worker's tree cannot mark it ready: the notify
// socket's name is no secret, but the kernel says who sent each datagram
// (SO_PASSCRED), and only the worker's own tree counts.
func TestSpoofedReadyIgnored(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2", "--ready-timeout", "60s"}, bin.testapp, "-mode", "never-ready")
	st := m.waitStatus(20*time.Second, "two starting workers", func(st workers.Status) bool {
		return countState(st, 1, workers.Starting) == 2
	})
	for _, w := range st.Workers {
		path := envOfPID(t, w.PID, "NOTIFY_SOCKET")
		if path == "" {
			t.Fatalf("worker %d has no NOTIFY_SOCKET", w.PID)
		}
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("READY=1")); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	m.log.waitLine(t, 20*time.Second, "dropped notify datagram", "not of the worker's process tree")
	st, err := m.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Serving || countState(st, 1, workers.Ready) != 0 {
		t.Fatalf("spoofed READY=1 made workers ready: %+v", st)
	}
}
