package systemd

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// setListenEnv sets (or, for "-", unsets) the activation variables for
// the test, restoring them afterwards.
func setListenEnv(t *testing.T, pid, fds, names string) {
	t.Helper()
	for k, v := range map[string]string{"LISTEN_PID": pid, "LISTEN_FDS": fds, "LISTEN_FDNAMES": names} {
		t.Setenv(k, v) // registers the restore
		if v == "-" {
			os.Unsetenv(k)
		}
	}
}

func assertListenEnvGone(t *testing.T) {
	t.Helper()
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q is still set: workers would inherit it", k, v)
		}
	}
}

// TestActivationSocketsNone covers the cases where this process got no
// sockets. None of them may touch a descriptor, so they are safe in the
// test process itself.
func TestActivationSocketsNone(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name           string
		pid, fds, fdns string
	}{
		{"absent", "-", "-", "-"},
		{"no pid", "-", "2", "a:b"},
		{"no fds", self, "-", "a"},
		{"empty fds", self, "", ""},
		{"other process", strconv.Itoa(os.Getppid()), "2", "a:b"},
		{"pid 1", "1", "1", "a"},
		{"pid with a sign", "+" + self, "1", "a"},
		{"pid with spaces", " " + self, "1", "a"},
		{"zero fds", self, "0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setListenEnv(t, tt.pid, tt.fds, tt.fdns)
			socks, err := ActivationSockets()
			if err != nil || len(socks) != 0 {
				t.Fatalf("ActivationSockets() = %v, %v; want none", socks, err)
			}
			assertListenEnvGone(t)
		})
	}
}

func TestActivationSocketsBadCount(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, fds := range []string{"x", "-1", "1.0", "0x2", "99999999999999999999"} {
		t.Run(fds, func(t *testing.T) {
			setListenEnv(t, self, fds, "a")
			socks, err := ActivationSockets()
			if err == nil {
				t.Fatalf("LISTEN_FDS=%q: got %v, want an error", fds, socks)
			}
			if !strings.Contains(err.Error(), "LISTEN_FDS") {
				t.Errorf("error %q does not name LISTEN_FDS", err)
			}
			assertListenEnvGone(t)
		})
	}
}

// activationResult is what the helper process reports.
type activationResult struct {
	CloexecBefore []bool
	Sockets       []Socket
	CloexecAfter  []bool
	Addrs         []string
	Env           []string
	Err           string
}

const helperEnv = "HANDOFF_TEST_ACTIVATION_HELPER"

// TestActivationHelper runs in a child process started by
// TestActivationSocketsPassed, with sockets at descriptors 3 and up, as
// systemd passes them.
func TestActivationHelper(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv(helperEnv))
	if err != nil {
		t.Skip("only run as a helper process")
	}
	var r activationResult
	for fd := 3; fd < 3+n; fd++ {
		r.CloexecBefore = append(r.CloexecBefore, cloexec(fd))
	}
	// The pid is only known now: systemd sets it after fork.
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	socks, err := ActivationSockets()
	if err != nil {
		r.Err = err.Error()
	}
	r.Sockets = socks
	for _, s := range socks {
		r.CloexecAfter = append(r.CloexecAfter, cloexec(s.Fd))
		sa, err := unix.Getsockname(s.Fd)
		if a, ok := sa.(*unix.SockaddrInet4); ok && err == nil {
			r.Addrs = append(r.Addrs, net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port)))
		} else {
			r.Addrs = append(r.Addrs, fmt.Sprintf("%T %v", sa, err))
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			r.Env = append(r.Env, kv)
		}
	}
	b, _ := json.Marshal(r)
	fmt.Printf("\nRESULT %s\n", b)
}

func cloexec(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && fl&unix.FD_CLOEXEC != 0
}

// TestActivationSocketsPassed passes real listening sockets to a child
// process the way systemd does, and checks what ActivationSockets makes
// of them there.
func TestActivationSocketsPassed(t *testing.T) {
	tests := []struct {
		fds       int
		names     string
		wantNames []string
	}{
		{2, "web:admin", []string{"web", "admin"}},
		{3, "web:", []string{"web", "unknown", "unknown"}}, // fewer names than sockets
		{1, "a:b:c", []string{"a"}},                        // more names than sockets
		{2, "", []string{"unknown", "unknown"}},            // no LISTEN_FDNAMES (systemd < 227)
		{2, "web:web", []string{"web", "web"}},             // duplicates are passed through
		{1, "-", []string{"unknown"}},                      // LISTEN_FDNAMES unset
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d,%q", tt.fds, tt.names), func(t *testing.T) {
			var (
				files []*os.File
				addrs []string
			)
			for i := 0; i < tt.fds; i++ {
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				f, err := ln.(*net.TCPListener).File()
				ln.Close()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				files = append(files, f)
				addrs = append(addrs, ln.Addr().String())
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestActivationHelper$", "-test.count=1")
			cmd.ExtraFiles = files
			cmd.Env = append(os.Environ(), helperEnv+"="+strconv.Itoa(tt.fds), "LISTEN_FDS="+strconv.Itoa(tt.fds),
				"GORACE=atexit_sleep_ms=0") // a -race binary otherwise lingers 1 s at exit
			if tt.names != "-" {
				cmd.Env = append(cmd.Env, "LISTEN_FDNAMES="+tt.names)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			_, js, ok := strings.Cut(string(out), "\nRESULT ")
			if !ok {
				t.Fatalf("helper printed no result:\n%s", out)
			}
			js, _, _ = strings.Cut(js, "\n")
			var r activationResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatalf("helper result %q: %v", js, err)
			}
			if r.Err != "" {
				t.Fatalf("ActivationSockets: %s", r.Err)
			}
			for i, c := range r.CloexecBefore {
				if c {
					t.Fatalf("setup: passed fd %d is close-on-exec already", 3+i)
				}
			}
			if len(r.Sockets) != tt.fds {
				t.Fatalf("got %d sockets, want %d: %+v", len(r.Sockets), tt.fds, r.Sockets)
			}
			for i, s := range r.Sockets {
				if s.Fd != 3+i || s.Name != tt.wantNames[i] {
					t.Errorf("socket %d = %+v, want {Name:%s Fd:%d}", i, s, tt.wantNames[i], 3+i)
				}
				if !r.CloexecAfter[i] {
					t.Errorf("fd %d is not close-on-exec: a worker would inherit the master's copy", s.Fd)
				}
				if r.Addrs[i] != addrs[i] {
					t.Errorf("fd %d is bound to %s, want %s", s.Fd, r.Addrs[i], addrs[i])
				}
			}
			if len(r.Env) != 0 {
				t.Errorf("still in the environment: %v", r.Env)
			}
		})
	}
}
