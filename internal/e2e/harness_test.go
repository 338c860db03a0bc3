//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/workers"
)

// The tests run real binaries: handoff itself, examples/hello (as v1 and
// v2) and testdata/testapp, built once by TestMain.
var bin struct {
	dir      string
	handoff  string
	handoff2 string // the same code with another version string: other bytes
	hello1   string
	hello2   string
	testapp  string
	buildErr error
}

func TestMain(m *testing.M) {
	// The end-to-end tests run real masters through hundreds of reloads
	// and take several minutes on 2 cores, more on a busy machine: go
	// test's default 10-minute limit would cut them short. A limit given
	// explicitly (-timeout, other than the default) is kept.
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil && f.Value.String() == (10*time.Minute).String() {
		f.Value.Set((40 * time.Minute).String())
	}
	if testing.Short() {
		// -short is the in-process tests' fast feedback (the simulator
		// among them); this package is the end-to-end tests: real
		// binaries, processes and load. They run in go test ./....
		fmt.Println("handoff: end-to-end tests skipped with -short")
		os.Exit(0)
	}
	// The tests name the repository's files (examples, .ci, this
	// package's testdata) from the module's root.
	if err := chdirModuleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "handoff-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.dir = dir
	bin.handoff = filepath.Join(dir, "handoff")
	bin.handoff2 = filepath.Join(dir, "handoff2")
	bin.hello1 = filepath.Join(dir, "hello-v1")
	bin.hello2 = filepath.Join(dir, "hello-v2")
	bin.testapp = filepath.Join(dir, "testapp")
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	builds := [][]string{
		append(append([]string{"build"}, race...), "-o", bin.handoff, "."),
		append(append([]string{"build"}, race...), "-ldflags", "-X main.version=two", "-o", bin.handoff2, "."),
		{"build", "-ldflags", "-X main.version=v1", "-o", bin.hello1, "./examples/hello"},
		{"build", "-ldflags", "-X main.version=v2", "-o", bin.hello2, "./examples/hello"},
		{"build", "-o", bin.testapp, "./internal/e2e/testdata/testapp"},
	}
	for _, args := range builds {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	skips.print()
	os.Exit(code)
}

// chdirModuleRoot makes the module's root the working directory.
func chdirModuleRoot() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return errors.New("go env GOMOD: not in a module")
	}
	return os.Chdir(filepath.Dir(mod))
}

// skips are the end-to-end tests that skipped, and why: go test shows
// them only with -v, so TestMain prints them at the end in any case.
var skips skipList

type skipList struct {
	mu   sync.Mutex
	list []string
}

func (s *skipList) print() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.list) == 0 {
		return
	}
	fmt.Printf("handoff: %d end-to-end tests skipped:\n", len(s.list))
	for _, l := range s.list {
		fmt.Println("  " + l)
	}
}

// skipf skips t, saying why, and records it for TestMain's summary.
func skipf(t *testing.T, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	skips.mu.Lock()
	skips.list = append(skips.list, t.Name()+": "+why)
	skips.mu.Unlock()
	t.Skip(why)
}

// logBuf collects a process's stderr and lets a test wait for a line.
type logBuf struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{cond: make(chan struct{})} }

// startLogged starts cmd with its output in a logBuf. When the test ends
// it is asked to stop (SIGTERM) and waited for, and its output is logged
// if the test failed.
func startLogged(t *testing.T, cmd *exec.Cmd) *logBuf {
	t.Helper()
	logs := newLogBuf()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return logs
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.cond)
	l.cond = make(chan struct{})
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many lines contain all of subs.
func (l *logBuf) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if containsAll(line, subs...) {
			n++
		}
	}
	return n
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// waitLine waits until some line of the log contains every one of subs.
func (l *logBuf) waitLine(t *testing.T, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		text, changed := l.buf.String(), l.cond
		l.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			if containsAll(line, subs...) {
				return line
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line with %q within %s; log:\n%s", subs, timeout, text)
		}
	}
}

// master is a running 'handoff run'.
type master struct {
	t       *testing.T
	cmd     *exec.Cmd
	ctl     string
	log     *logBuf
	done    chan struct{}
	waitErr error
	// handsOver is set by tests that upgrade the master: the process
	// started exits, and its successor answers on the control socket.
	handsOver bool
}

// startMaster runs handoff with a tcp listener on a free port of
// 127.0.0.1 and the given flags and command.
func startMaster(t *testing.T, flags []string, command ...string) *master {
	t.Helper()
	return startMasterWith(t, bin.handoff, nil, flags, command...)
}

// startMasterWith runs the handoff binary at exe with extra environment.
func startMasterWith(t *testing.T, exe string, env []string, flags []string, command ...string) *master {
	t.Helper()
	return launchMaster(t, exe, env, nil, flags, command...)
}

// launchMaster runs the handoff binary at exe with extra environment;
// readLog, if not nil, reads the master's output instead of the
// harness's copy into m.log, and may stop reading (a reader that goes
// away) by closing it.
func launchMaster(t *testing.T, exe string, env []string, readLog func(m *master, out *os.File), flags []string, command ...string) *master {
	t.Helper()
	dir, err := os.MkdirTemp("", "ht-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m := &master{t: t, ctl: filepath.Join(dir, "ctl.sock"), log: newLogBuf(), done: make(chan struct{})}
	args := []string{"run", "--control", m.ctl, "--log-level", "debug"}
	if !hasFlag(flags, "--listen") && !hasFlag(flags, "--config") {
		args = append(args, "--listen", "http=tcp://127.0.0.1:0")
	}
	args = append(append(args, flags...), "--")
	args = append(args, command...)
	m.cmd = exec.Command(exe, args...)
	m.cmd.Env = append(os.Environ(), env...)
	// Give the master a pipe of our own rather than an io.Writer: a new
	// master started by a self-upgrade inherits it, and cmd.Wait would
	// otherwise wait for it to close, i.e. for the new master to exit.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout = pw
	m.cmd.Stderr = pw
	err = m.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatal(err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(40 * time.Second):
			m.cmd.Process.Kill()
			<-m.done
		}
		// A master this one handed over to (a self-upgrade) answers on
		// the same control socket: stop it too, even when the test
		// failed before it could.
		if st, err := m.status(); err == nil && st.PID != m.cmd.Process.Pid {
			stopPid(st.PID)
		}
		if t.Failed() {
			t.Logf("master log:\n%s", m.log.String())
		}
	})
	// After the cleanup above: a reader that fails the test leaves no
	// master behind.
	if readLog != nil {
		readLog(m, pr)
	} else {
		go func() {
			io.Copy(m.log, pr)
			pr.Close()
		}()
	}
	return m
}

func hasFlag(flags []string, name string) bool {
	for _, f := range flags {
		if f == name || strings.HasPrefix(f, name+"=") {
			return true
		}
	}
	return false
}

func (m *master) status() (workers.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st workers.Status
	resp, err := control.Do(ctx, m.ctl, control.Request{Cmd: "status"})
	if err != nil {
		return st, err
	}
	if !resp.OK {
		return st, fmt.Errorf("status: %s", resp.Error)
	}
	err = json.Unmarshal(resp.Result, &st)
	return st, err
}

// waitStatus polls the status until ok accepts it.
func (m *master) waitStatus(timeout time.Duration, what string, ok func(workers.Status) bool) workers.Status {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	var (
		st  workers.Status
		err error
	)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			if m.handsOver {
				break
			}
			m.t.Fatalf("master exited (%v) while waiting for %s; log:\n%s", m.waitErr, what, m.log.String())
		default:
		}
		st, err = m.status()
		if err == nil && ok(st) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("timed out after %s waiting for %s; last status %+v (err %v)", timeout, what, st, err)
	return st
}

// waitServing waits until generation gen serves with n ready workers and
// no other generation is left.
func (m *master) waitServing(gen, n int) workers.Status {
	m.t.Helper()
	return m.waitStatus(60*time.Second, fmt.Sprintf("generation %d serving with %d ready workers", gen, n), func(st workers.Status) bool {
		return st.Serving && st.Generation == gen && countState(st, gen, workers.Ready) == n && len(st.Workers) == n
	})
}

func countState(st workers.Status, gen int, state workers.State) int {
	n := 0
	for _, w := range st.Workers {
		if w.Generation == gen && w.State == state {
			n++
		}
	}
	return n
}

func (m *master) addr() string {
	m.t.Helper()
	st, err := m.status()
	if err != nil || len(st.Listeners) == 0 {
		m.t.Fatalf("no listener address: %v", err)
	}
	return st.Listeners[0].Addr
}

// cli runs a handoff client command against this master.
func (m *master) cli(args ...string) (stdout, stderr string, code int) {
	args = append(args[:1:1], append([]string{"--control", m.ctl}, args[1:]...)...)
	return runHandoff(m.t, args...)
}

func runHandoff(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin.handoff, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("handoff %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// waitExit waits for the master to exit and returns its exit code.
func (m *master) waitExit(timeout time.Duration) int {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(timeout):
		m.t.Fatalf("master still running after %s", timeout)
	}
	if ee, ok := m.waitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// get makes one request on a new connection and returns the body.
func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// field extracts key=value from an answer line.
func field(body, key string) string {
	for _, f := range strings.Fields(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// waitPortFree is used by tests that must know a port nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
