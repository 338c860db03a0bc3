package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/testutil"
)

func listenNotify(t *testing.T) *NotifySocket {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "n.sock")
	s, err := ListenNotify(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Drain()
		for range s.Datagrams() {
		}
	})
	return s
}

// send writes each payload as one datagram to the socket at path, as a
// worker's sd_notify does. When send returns, the datagrams are queued on
// the receiving socket.
func send(t *testing.T, path string, payloads ...string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A unix datagram sender blocks while the receiver's queue is full.
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, p := range payloads {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatalf("send %.20q: %v", p, err)
		}
	}
}

// next receives one datagram, failing after 5 s.
func next(t *testing.T, s *NotifySocket) Datagram {
	t.Helper()
	select {
	case d, ok := <-s.Datagrams():
		if !ok {
			t.Fatal("Datagrams closed early")
		}
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram within 5s")
	}
	panic("unreachable")
}

// closed waits (5 s at most) for Datagrams to be closed, failing if
// anything else arrives first.
func closed(t *testing.T, s *NotifySocket) {
	t.Helper()
	select {
	case d, ok := <-s.Datagrams():
		if ok {
			t.Fatalf("unexpected datagram %+v, want Datagrams closed", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Datagrams not closed within 5s")
	}
}

func TestNotifySocketDelivers(t *testing.T) {
	s := listenNotify(t)
	fi, err := os.Lstat(s.socketPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("mode %v, want a socket with 0666 (workers may drop privileges)", fi.Mode())
	}
	send(t, s.socketPath(), "STATUS=starting", "READY=1\nSTATUS=up", "STOPPING=1")
	want := []Message{
		{Status: "starting", HasStatus: true},
		{Ready: true, Status: "up", HasStatus: true},
		{Stopping: true},
	}
	for i, w := range want {
		d := next(t, s)
		if d.Err != nil || d.Msg != w {
			t.Fatalf("datagram %d = %+v, %v; want %+v", i, d.Msg, d.Err, w)
		}
	}
}

func TestNotifySocketBadDatagrams(t *testing.T) {
	s := listenNotify(t)
	tests := []struct {
		payload string
		wantErr string // "" for a good datagram
	}{
		{"hello", "not VARIABLE=VALUE"},
		{"READY=1\x00", "NUL"},
		{"STATUS=" + strings.Repeat("x", maxMessage-7), ""},
		{"STATUS=" + strings.Repeat("x", maxMessage-6), "larger than"},        // one byte over: fits the buffer
		{"STATUS=" + strings.Repeat("x", 3*maxMessage), "larger than"},        // MSG_TRUNC
		{"STATUS=" + strings.Repeat("x", maxMessage-7) + "\n", "larger than"}, // over by its final newline
		{"READY=1", ""}, // still served after the bad ones
	}
	for _, tt := range tests {
		send(t, s.socketPath(), tt.payload)
	}
	for _, tt := range tests {
		d := next(t, s)
		switch {
		case tt.wantErr == "" && d.Err != nil:
			t.Errorf("%.30q: %v", tt.payload, d.Err)
		case tt.wantErr != "" && (d.Err == nil || !strings.Contains(d.Err.Error(), tt.wantErr)):
			t.Errorf("%.30q: error %v, want one containing %q", tt.payload, d.Err, tt.wantErr)
		case tt.wantErr != "" && d.Msg != (Message{}):
			t.Errorf("%.30q: rejected datagram carries %+v", tt.payload, d.Msg)
		}
	}
}

// TestNotifySocketDrainDeliversQueued is the READY=1-just-before-exit case:
// datagrams a worker sent before Drain are delivered, then Datagrams is
// closed and the socket path removed.
func TestNotifySocketDrainDeliversQueued(t *testing.T) {
	s := listenNotify(t)
	send(t, s.socketPath(), "READY=1")
	s.Drain()
	d := next(t, s)
	if d.Err != nil || !d.Msg.Ready {
		t.Fatalf("got %+v, %v; want READY=1", d.Msg, d.Err)
	}
	closed(t, s)
	if _, err := os.Lstat(s.socketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket path still there after the last datagram: %v", err)
	}
}

// TestNotifySocketDrainDeliversBacklog queues more datagrams than the
// channel holds, so that at Drain most of them are still in the kernel's
// queue, not yet read: every one must be delivered, in order.
func TestNotifySocketDrainDeliversBacklog(t *testing.T) {
	s := listenNotify(t)
	// More than the channel holds (16) plus the datagram the reader blocks
	// on, but no more than the kernel then queues (net.unix.max_dgram_qlen)
	// so that sending does not block.
	qlen := 10
	if b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			qlen = min(v, 100)
		}
	}
	n := cap(s.c) + qlen
	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = "STATUS=" + strconv.Itoa(i)
	}
	payloads[n-1] = "READY=1"
	send(t, s.socketPath(), payloads...)
	s.Drain()
	s.Drain() // twice is harmless
	for i := 0; i < n-1; i++ {
		d := next(t, s)
		if d.Err != nil || d.Msg.Status != strconv.Itoa(i) {
			t.Fatalf("datagram %d = %+v, %v", i, d.Msg, d.Err)
		}
	}
	if d := next(t, s); !d.Msg.Ready {
		t.Fatalf("last datagram = %+v, %v; want READY=1", d.Msg, d.Err)
	}
	closed(t, s)
}

func TestNotifySocketDrainIdle(t *testing.T) {
	s := listenNotify(t)
	// Let the reader block in its read first, then wake it.
	send(t, s.socketPath(), "STATUS=x")
	next(t, s)
	s.Drain()
	closed(t, s)
	if _, err := os.Lstat(s.socketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket path still there: %v", err)
	}
	// Nothing listens any more.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.socketPath(), Net: "unixgram"})
	if err == nil {
		c.Close()
		t.Error("the drained socket still accepts datagrams")
	}
}

func TestNotifySocketDrainAtOnce(t *testing.T) {
	// Drain before the reader ran at all.
	for i := 0; i < 20; i++ {
		s, err := ListenNotify(filepath.Join(testutil.ShortDir(t), "n.sock"))
		if err != nil {
			t.Fatal(err)
		}
		s.Drain()
		closed(t, s)
	}
}

func TestListenNotifyExistingPath(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "n.sock")
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := ListenNotify(path); err == nil {
		s.Drain()
		t.Fatal("ListenNotify replaced an existing file")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Errorf("the existing file was changed: %q", b)
	}
}

// TestNotifySocketDropsDescriptors sends a descriptor with a datagram: the
// message is delivered and the descriptor is not kept open by the master.
func TestNotifySocketDropsDescriptors(t *testing.T) {
	s := listenNotify(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Sendmsg(c, []byte("READY=1"), unix.UnixRights(p[0]), &unix.SockaddrUnix{Name: s.socketPath()}, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[0]) // the only read end left is the one in flight
	if d := next(t, s); d.Err != nil || !d.Msg.Ready {
		t.Fatalf("got %+v, %v; want READY=1", d.Msg, d.Err)
	}
	// The received copy was discarded: the pipe has no reader.
	if _, err := unix.Write(p[1], []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Errorf("write to the pipe: %v, want EPIPE (the passed descriptor was kept)", err)
	}
}

// TestNotifierSends checks what the master's own Notifier sends, received
// on a real notify socket standing in for systemd's.
func TestNotifierSends(t *testing.T) {
	s := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", s.socketPath())
	n := NewNotifier()
	if !n.enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	raw := func() string {
		t.Helper()
		d := next(t, s)
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		return fmt.Sprintf("%+v", d.Msg)
	}
	steps := []struct {
		call func() error
		want Message
	}{
		{func() error { return n.Ready("up") }, Message{Ready: true, Status: "up", HasStatus: true}},
		{func() error { return n.Status("busy") }, Message{Status: "busy", HasStatus: true}},
		{func() error { return n.Reloading("reloading") }, Message{Status: "reloading", HasStatus: true}},
		{func() error { return n.ReadyAsMain("up") }, Message{Ready: true, Status: "up", HasStatus: true}},
		{func() error { return n.Stopping("stopping", 5*time.Second) }, Message{Stopping: true, Status: "stopping", HasStatus: true}},
		{func() error { return n.Watchdog() }, Message{Watchdog: true}},
	}
	for i, st := range steps {
		if err := st.call(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got, want := raw(), fmt.Sprintf("%+v", st.want); got != want {
			t.Fatalf("step %d sent %s, want %s", i, got, want)
		}
	}
	// An unchanged status is not sent again; a changed one is.
	if err := n.Status("stopping"); err != nil {
		t.Fatal(err)
	}
	if err := n.Status("idle"); err != nil {
		t.Fatal(err)
	}
	if d := next(t, s); d.Msg.Status != "idle" {
		t.Fatalf("got %+v after a repeated status, want only STATUS=idle", d.Msg)
	}
}

// TestNotifierWireFormat reads the raw datagrams, for the fields
// parseMessage ignores.
func TestNotifierWireFormat(t *testing.T) {
	path := filepath.Join(testutil.ShortDir(t), "raw.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n := NewNotifier()
	read := func() map[string]string {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, maxMessage)
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, l := range strings.Split(string(buf[:k]), "\n") {
			key, v, _ := strings.Cut(l, "=")
			m[key] = v
		}
		return m
	}
	if err := n.ReadyAsMain("up"); err != nil {
		t.Fatal(err)
	}
	if m := read(); m["MAINPID"] != strconv.Itoa(os.Getpid()) || m["READY"] != "1" {
		t.Errorf("ReadyAsMain sent %v", m)
	}
	if err := n.Stopping("bye", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if m := read(); m["EXTEND_TIMEOUT_USEC"] != "1500000" || m["STOPPING"] != "1" {
		t.Errorf("Stopping sent %v", m)
	}
	before := monotonicUsec()
	if err := n.Reloading("r"); err != nil {
		t.Fatal(err)
	}
	m := read()
	usec, err := strconv.ParseInt(m["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > monotonicUsec() || m["RELOADING"] != "1" {
		t.Errorf("Reloading sent %v (monotonic clock was %d)", m, before)
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}

func TestNotifierDisabled(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := NewNotifier()
	if n.enabled() {
		t.Fatal("Enabled() with NOTIFY_SOCKET empty")
	}
	if err := n.Ready("x"); err != nil {
		t.Errorf("Ready without systemd: %v", err)
	}
	if err := n.Watchdog(); err != nil {
		t.Errorf("Watchdog without systemd: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		inherited bool
		want      time.Duration
		wantErr   bool
	}{
		{"", "", false, 0, false},
		{"2000000", "", false, time.Second, false},
		{"2000000", self, false, time.Second, false},
		{"2000000", "1", false, 0, false},          // another process's watchdog
		{"2000000", "1", true, time.Second, false}, // a successor owns it
		{"3", "", false, 1500 * time.Nanosecond, false},
		{"0", "", false, 0, true},
		{"-5", "", false, 0, true},
		{"abc", "", false, 0, true},
		{"1.5", "", false, 0, true},
		{"9223372036854776", "", false, 0, true}, // overflows a Duration in nanoseconds
		{"9223372036854", "", false, 9223372036854 * time.Microsecond / 2, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("usec=%q,pid=%q,inherited=%v", tt.usec, tt.pid, tt.inherited), func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, err := WatchdogInterval(tt.inherited)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("WatchdogInterval = %v, %v; want %v (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The kernel vouches for who sent a datagram: the receiver sees the
// sender's pid, here this process's, and a child's own.
func TestNotifySenderPID(t *testing.T) {
	s := listenNotify(t)
	send(t, s.socketPath(), "READY=1")
	if d := next(t, s); d.PID != os.Getpid() {
		t.Fatalf("sender pid %d, want %d", d.PID, os.Getpid())
	}
	cmd := exec.Command("/bin/sh", "-c", `printf 'STATUS=child' | socat - UNIX-SENDTO:"$1" 2>/dev/null || python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b"STATUS=child", sys.argv[1])' "$1"`, "sh", s.socketPath())
	if err := cmd.Run(); err != nil {
		t.Skipf("no way to send from a child process here: %v", err)
	}
	d := next(t, s)
	if d.PID == 0 || d.PID == os.Getpid() {
		t.Fatalf("a child's datagram: sender pid %d, want the child's own", d.PID)
	}
}
