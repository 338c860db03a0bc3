//go:build linux

package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMasterToEnd runs 'handoff run' to its end (at most a minute) with a
// TMPDIR of its own, and returns its stderr and exit code.
func runMasterToEnd(t *testing.T, tmp string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.handoff, append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("handoff run %v still running after 60s; stderr:\n%s", args, stderr.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stderr.String(), code
}

// A control socket in use by a live master is a startup error like the
// others: one line, exit 1, no worker started, nothing left behind.
func TestControlSocketInUse(t *testing.T) {
	dir, err := os.MkdirTemp("", "hc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "c.sock")
	ln, err := net.Listen("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	marker := filepath.Join(dir, "started")
	trap := filepath.Join(dir, "trap.sh")
	os.WriteFile(trap, []byte("#!/bin/sh\ntouch "+marker+"\nexec sleep 100\n"), 0o755)
	tmp := t.TempDir()
	stderr, code := runMasterToEnd(t, tmp, "--control", ctl, "--listen", "http=tcp://127.0.0.1:0", "--", trap)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "handoff: control socket "+ctl+" is in use by another running handoff") {
		t.Errorf("exit %d, stderr %q; want exit 1 and one line saying the control socket is in use", code, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a worker started")
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the failed master left %s in its TMPDIR", left[0].Name())
	}
}

// The pid file goes once the master stops for good.
func TestPidFileRemovedOnStop(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "master.pid")
	m := startMaster(t, []string{"--workers", "1", "--pid-file", pidFile}, bin.hello1)
	m.waitServing(1, 1)
	b, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(m.cmd.Process.Pid) {
		t.Fatalf("pid file %q, %v; want the master's pid %d", b, err, m.cmd.Process.Pid)
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("master exited %d", code)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("the pid file is still there after a clean stop: %v", err)
	}
}

// notifyDir returns the directory of a worker's NOTIFY_SOCKET: the
// master's runtime directory.
func notifyDir(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "NOTIFY_SOCKET="); ok {
			return filepath.Dir(v)
		}
	}
	t.Fatalf("worker %d has no NOTIFY_SOCKET", pid)
	return ""
}

// A master killed with SIGKILL cannot remove its runtime directory; the
// next master does.
func TestKilledMasterRuntimeDir(t *testing.T) {
	tmp, err := os.MkdirTemp("", "hk-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	env := []string{"TMPDIR=" + tmp}
	first := startMasterWith(t, bin.handoff, env, []string{"--workers", "1"}, bin.hello1)
	st := first.waitServing(1, 1)
	dir := notifyDir(t, st.Workers[0].PID)
	if !strings.HasPrefix(dir, tmp+"/") {
		t.Fatalf("runtime directory %s is not in TMPDIR %s", dir, tmp)
	}
	first.cmd.Process.Kill()
	first.waitExit(30 * time.Second)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the killed master's runtime directory is already gone (%v): the test shows nothing", err)
	}
	second := startMasterWith(t, bin.handoff, env, []string{"--workers", "1"}, bin.hello1)
	second.waitServing(1, 1)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the killed master's runtime directory %s is still there: %v", dir, err)
	}
}

// 'handoff run' without a listener runs, and says once that workers get
// no sockets.
func TestNoListenWarning(t *testing.T) {
	dir, err := os.MkdirTemp("", "hn-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(bin.handoff, "run", "--control", filepath.Join(dir, "c.sock"), "--workers", "1", "--ready", "delay=100ms", "--", "sleep", "1000")
	logs := startLogged(t, cmd)
	logs.waitLine(t, 60*time.Second, "generation serving")
	if n := logs.count("workers get no sockets"); n != 1 {
		t.Errorf("%d lines say workers get no sockets, want 1", n)
	}
}
