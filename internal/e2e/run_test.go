//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// Three workers share one port: all three answer, the master never does.
func TestRunThreeWorkersShareOnePort(t *testing.T) {
	m := startMaster(t, []string{"--workers", "3"}, bin.hello1)
	st := m.waitServing(1, 3)
	addr := m.addr()
	want := map[string]bool{}
	for _, w := range st.Workers {
		want[strconv.Itoa(w.PID)] = true
	}
	if len(want) != 3 {
		t.Fatalf("want 3 distinct worker pids, status has %v", st.Workers)
	}
	seen := map[string]int{}
	// Concurrent slow requests keep one worker busy so others accept.
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := get(addr, "/sleep?d=20ms")
				if err != nil {
					t.Errorf("request failed: %v", err)
					return
				}
				mu.Lock()
				seen[field(body, "pid")]++
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	for pid := range seen {
		if pid == strconv.Itoa(st.PID) {
			t.Fatalf("the master (pid %s) answered a request", pid)
		}
		if !want[pid] {
			t.Fatalf("pid %s answered but is not a worker %v", pid, want)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("answers came from %d pids (%v), want 3", len(seen), seen)
	}
}

// Workers see exactly the systemd contract, and nothing else of the
// master leaks into them: fds 0-2, the listeners, nothing more.
func TestRunWorkerContract(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "worker.sh")
	// A shell worker that reports readiness through a helper process
	// (systemd-notify, which exits right away), as a unit script would.
	os.WriteFile(script, []byte(`#!/bin/sh
env > "`+dir+`/env.$HANDOFF_WORKER"
systemd-notify --ready --status="slot $HANDOFF_WORKER up"
exec sleep 600
`), 0o755)
	if _, err := os.Stat("/usr/bin/systemd-notify"); err != nil {
		skipf(t, "systemd-notify not installed")
	}
	sock := filepath.Join(dir, "u.sock")
	m := startMaster(t, []string{"--workers", "2",
		"--listen", "http=tcp://127.0.0.1:0", "--listen", "admin=unix://" + sock, "--listen", "dns=udp://127.0.0.1:0",
	}, script)
	st := m.waitServing(1, 2)
	for _, w := range st.Workers {
		if w.Status != fmt.Sprintf("slot %d up", w.Slot) {
			t.Errorf("slot %d: STATUS text %q not kept", w.Slot, w.Status)
		}
		env, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("env.%d", w.Slot)))
		if err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{}
		for _, line := range strings.Split(string(env), "\n") {
			k, v, _ := strings.Cut(line, "=")
			vars[k] = v
		}
		checks := map[string]string{
			"LISTEN_FDS":         "3",
			"LISTEN_FDNAMES":     "http:admin:dns",
			"LISTEN_PID":         strconv.Itoa(w.PID),
			"HANDOFF_WORKER":     strconv.Itoa(w.Slot),
			"HANDOFF_GENERATION": "1",
		}
		for k, want := range checks {
			if vars[k] != want {
				t.Errorf("slot %d: %s=%q, want %q", w.Slot, k, vars[k], want)
			}
		}
		for k := range vars {
			if strings.HasPrefix(k, "HANDOFF_INTERNAL") || strings.HasPrefix(k, "WATCHDOG_") {
				t.Errorf("slot %d: internal variable %s leaked", w.Slot, k)
			}
		}
		// /proc/PID/fd of the exec'd sleep: stdio and three listeners.
		// READY=1 came from the script, which may not have exec'd yet.
		m.waitStatus(10*time.Second, "worker exec'd sleep", func(workers.Status) bool {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", w.PID))
			return strings.TrimSpace(string(comm)) == "sleep"
		})
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", w.PID))
		if err != nil {
			t.Fatal(err)
		}
		var fds []int
		for _, e := range ents {
			n, _ := strconv.Atoi(e.Name())
			fds = append(fds, n)
		}
		sort.Ints(fds)
		if fmt.Sprint(fds) != "[0 1 2 3 4 5]" {
			t.Errorf("slot %d: worker has fds %v, want [0 1 2 3 4 5]", w.Slot, fds)
			for _, fd := range fds {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.PID, fd))
				t.Logf("fd %d -> %s", fd, l)
			}
		}
		for fd, kind := range map[int]string{3: "socket:", 4: "socket:", 5: "socket:"} {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.PID, fd))
			if !strings.HasPrefix(l, kind) {
				t.Errorf("slot %d: fd %d is %s, want a socket", w.Slot, fd, l)
			}
		}
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("unix listener %s not created: %v", sock, err)
	}
}

// A Go worker (net/http, which sets O_NONBLOCK on the shared socket) and a
// C-style worker (poll, then accept) serve side by side.
func TestRunGoAndCStyleWorkersSideBySide(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "mixed")
	m.waitServing(1, 2)
	addr := m.addr()
	modes := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for (modes["serve"] == 0 || modes["cstyle"] == 0) && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := get(addr, "/")
				if err != nil {
					t.Errorf("request failed: %v", err)
					return
				}
				mu.Lock()
				modes[field(body, "mode")]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	if modes["serve"] == 0 || modes["cstyle"] == 0 {
		t.Fatalf("answers by mode: %v, want both serve and cstyle", modes)
	}
}

// kill -9 of the only worker: it is replaced at once (it had served for
// more than a second), and connections made during the gap wait in the
// backlog and succeed.
func TestRunKilledWorkerReplacedNoRefusedConnections(t *testing.T) {
	m := startMaster(t, []string{"--workers", "1"}, bin.hello1)
	st := m.waitServing(1, 1)
	addr := m.addr()
	old := st.Workers[0]
	// Let it count as healthy: ready for longer than a second.
	m.waitStatus(10*time.Second, "worker up for 1.2s", func(st workers.Status) bool {
		return len(st.Workers) == 1 && time.Since(st.Workers[0].Since) > 1200*time.Millisecond
	})

	// Kill, then at once open connections while no worker exists.
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := get(addr, "/")
			if err == nil && field(body, "pid") == strconv.Itoa(old.PID) {
				return // answered before the kill landed
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("request during the gap failed: %v", err)
	}
	st = m.waitServing(1, 1)
	if st.Workers[0].PID == old.PID || st.Workers[0].Restarts != 1 {
		t.Fatalf("slot 0 not replaced: %+v", st.Workers[0])
	}
	line := m.log.waitLine(t, 5*time.Second, "replacing worker", "slot=0")
	if strings.Contains(line, "backoff") {
		t.Fatalf("a worker that served was replaced with backoff: %s", line)
	}
}

// A worker that never becomes ready is killed at the ready timeout and
// retried with doubling backoff.
func TestRunNeverReadyWorkerBacksOff(t *testing.T) {
	m := startMaster(t, []string{"--workers", "1", "--ready-timeout", "300ms", "--start-attempts", "0"}, bin.testapp, "-mode", "never-ready")
	m.log.waitLine(t, 20*time.Second, "worker not ready in time")
	m.log.waitLine(t, 20*time.Second, "restarting after backoff", "backoff=100ms")
	m.log.waitLine(t, 20*time.Second, "restarting after backoff", "backoff=200ms")
	m.log.waitLine(t, 20*time.Second, "restarting after backoff", "backoff=400ms")
	st := m.waitStatus(10*time.Second, "slot in backoff or starting with restarts", func(st workers.Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].Restarts >= 3
	})
	if st.Serving {
		t.Fatalf("master claims to serve with a worker that was never ready: %+v", st)
	}
	if n := m.log.count("not ready within 300ms"); n < 3 {
		t.Fatalf("want each failure to name the timeout, found %d", n)
	}
}

// Garbage on a notify socket is dropped and logged; the worker that sent
// it still becomes ready. One worker's READY=1 never readies another.
func TestRunNotifySocketGarbageAndIsolation(t *testing.T) {
	t.Run("garbage", func(t *testing.T) {
		m := startMaster(t, []string{"--workers", "1"}, bin.testapp, "-mode", "garbage")
		st := m.waitServing(1, 1)
		if st.Workers[0].Status != "survived garbage" {
			t.Fatalf("STATUS after garbage = %q", st.Workers[0].Status)
		}
		m.log.waitLine(t, 5*time.Second, "dropped notify datagram")
		if _, err := get(m.addr(), "/"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("isolation", func(t *testing.T) {
		m := startMaster(t, []string{"--workers", "2", "--ready-timeout", "2s"}, bin.testapp, "-mode", "slot0-ready")
		m.log.waitLine(t, 20*time.Second, "worker ready", "slot=0")
		m.log.waitLine(t, 20*time.Second, "worker not ready in time", "slot=1")
		if n := m.log.count("worker ready", "slot=1"); n != 0 {
			t.Fatalf("slot 1 became ready through slot 0's notifications")
		}
	})
}

// A slow request in flight at SIGTERM completes; the master then exits 0.
func TestRunStopDrainsInFlightRequest(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2", "--drain-timeout", "20s"}, bin.testapp)
	m.waitServing(1, 2)
	addr := m.addr()
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		body, err := get(addr, "/sleep?d=1500ms")
		res <- result{body, err}
	}()
	// The worker announces the request with STATUS=busy 1.
	m.waitStatus(10*time.Second, "a worker busy with the request", func(st workers.Status) bool {
		for _, w := range st.Workers {
			if w.Status == "busy 1" {
				return true
			}
		}
		return false
	})
	start := time.Now()
	m.cmd.Process.Signal(syscall.SIGTERM)
	r := <-res
	if r.err != nil {
		t.Fatalf("in-flight request failed at SIGTERM: %v", r.err)
	}
	if code := m.waitExit(25 * time.Second); code != 0 {
		t.Fatalf("master exit code %d", code)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("stop took %s, beyond the drain timeout", took)
	}
	m.log.waitLine(t, time.Second, "all workers stopped")
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatalf("%s still accepts after the master exited", addr)
	}
}

// A worker that ignores the stop signal is killed at the drain timeout.
func TestRunStopKillsAfterDrainTimeout(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "never")
	ready := gate + ".ready"
	os.WriteFile(ready, nil, 0o644)
	m := startMaster(t, []string{"--workers", "1", "--drain-timeout", "500ms"}, bin.testapp, "-mode", "gate", "-gate", ready, "-gate-stop", gate)
	m.waitServing(1, 1)
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("master exit code %d", code)
	}
	m.log.waitLine(t, time.Second, "did not exit in time, killing it")
	m.log.waitLine(t, time.Second, "worker exited", "killed by SIGKILL")
}

// 'handoff stop --wait' returns once the master has exited.
func TestRunStopWait(t *testing.T) {
	m := startMaster(t, []string{"--workers", "1"}, bin.hello1)
	st := m.waitServing(1, 1)
	stdout, stderr, code := m.cli("stop", "--wait", "--timeout", "30s")
	if code != 0 || stdout != fmt.Sprintf("master %d stopped\n", st.PID) {
		t.Fatalf("stop --wait: exit %d, %q %q", code, stdout, stderr)
	}
	// The pid is gone, so the process was reaped: its exit is known.
	if code := m.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("master exit code %d", code)
	}
}

// As pid 1 (in a container) the master reaps orphans too, and still
// tells its own workers' exits apart.
func TestRunAsPid1ReapsOrphans(t *testing.T) {
	if os.Getuid() != 0 {
		skipf(t, "needs root for a pid namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		skipf(t, "unshare not installed")
	}
	dir, _ := os.MkdirTemp("", "p1-")
	defer os.RemoveAll(dir)
	// The subshell exits at once, orphaning its sleep, which the kernel
	// gives to pid 1: the master.
	worker := script(t, dir, "w", `( sleep 0.1 & ) ; exec sleep 600`)
	ctl := filepath.Join(dir, "c.sock")
	cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", bin.handoff, "run", "--control", ctl,
		"--log-level", "debug", "--workers", "2", "--ready", "delay=300ms", "--", worker)
	logs := newLogBuf()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	defer func() {
		// unshare ignores SIGTERM while it waits: stop the master
		// through its control socket; SIGKILL to unshare takes the
		// whole namespace down (--kill-child) if that fails.
		exec.Command(bin.handoff, "stop", "--control", ctl).Run()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	logs.waitLine(t, 20*time.Second, "master started", "pid=1 ")
	logs.waitLine(t, 20*time.Second, "reaped orphan")
	logs.waitLine(t, 20*time.Second, "generation serving")
	if out, err := exec.Command(bin.handoff, "status", "--control", ctl).CombinedOutput(); err != nil || !strings.Contains(string(out), "ready") {
		t.Fatalf("status: %v %s", err, out)
	}
	if n := logs.count("worker exited"); n != 0 {
		t.Fatalf("a worker was reported exited while running: %s", logs.String())
	}
}

// A second SIGINT kills workers that are still draining, at once.
func TestRunSecondSigintKills(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "never")
	ready := gate + ".ready"
	os.WriteFile(ready, nil, 0o644)
	m := startMaster(t, []string{"--workers", "2", "--drain-timeout", "5m"}, bin.testapp, "-mode", "gate", "-gate", ready, "-gate-stop", gate)
	m.waitServing(1, 2)
	m.cmd.Process.Signal(syscall.SIGINT)
	m.log.waitLine(t, 10*time.Second, "worker draining", "slot=1")
	m.log.waitLine(t, 10*time.Second, "worker draining", "slot=0")
	m.cmd.Process.Signal(syscall.SIGINT)
	if code := m.waitExit(30 * time.Second); code != 0 {
		t.Fatalf("master exit code %d", code)
	}
	m.log.waitLine(t, time.Second, "second SIGINT: killing workers now")
	if n := m.log.count("worker exited", "killed by SIGKILL"); n != 2 {
		t.Fatalf("%d workers killed, want 2", n)
	}
}
