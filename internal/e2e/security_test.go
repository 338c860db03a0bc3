//go:build linux

package e2e

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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

// Workers that flood their notify sockets (STATUS= and garbage, as fast as
// they can) do not starve the supervisor: status answers, a reload goes
// through, requests are answered, and the log about garbage stays
// rate-limited.
func TestNotifyFloodDoesNotStarveSupervisor(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "flood")
	m.waitServing(1, 2)
	l := startStrictNew(m.addr(), 2)
	defer l.stop()
	if !l.waitRequests(100, 20*time.Second) {
		t.Fatal("load is not getting answers")
	}
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, err := m.status(); err != nil {
			t.Fatal(err)
		}
	}
	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload under a notify flood: exit %d %s%s", code, stdout, stderr)
	}
	m.waitServing(2, 2)
	if fails := l.stop(); len(fails) > 0 {
		t.Errorf("%d requests failed:\n%s", len(fails), summarize(fails))
	}
	// One line a second per worker at most (workers of two generations).
	if n, limit := m.log.count("dropped notify datagram"), 4*(1+int(time.Since(start).Seconds())); n > limit {
		t.Errorf("%d log lines about dropped datagrams in %s: not rate-limited", n, time.Since(start).Round(time.Second))
	}
}

// Another user cannot use the control socket: not even reach it (its
// directory is 0700) and, past that, SO_PEERCRED refuses them.
func TestControlRefusesOtherUser(t *testing.T) {
	if os.Getuid() != 0 {
		skipf(t, "needs root to run a client as another user")
	}
	m := startMaster(t, []string{"--workers", "1"}, bin.hello1)
	m.waitServing(1, 1)
	dir, err := os.MkdirTemp("", "hs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	client := dir + "/handoff"
	copyFile(t, bin.handoff, client) // where nobody may run it
	cmd := exec.Command(client, "status", "--control", m.ctl)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("status as nobody: %v, %q; want refused", err, out)
	}
}
