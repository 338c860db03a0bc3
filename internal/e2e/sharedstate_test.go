//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// examples/shared-state keeps a per-user counter in a worker's memory and
// in Redis. These tests show what the README says: the in-memory count is
// per worker and starts again in every new worker (a crash, a reload), the
// Redis count is one count through a kill -9 of a worker, a reload and a
// master self-upgrade.

var sharedStateApp struct {
	once sync.Once
	path string
	err  error
}

// buildSharedState builds examples/shared-state once per test binary.
func buildSharedState(t *testing.T) string {
	t.Helper()
	sharedStateApp.once.Do(func() {
		sharedStateApp.path = filepath.Join(bin.dir, "shared-state")
		out, err := exec.Command("go", "build", "-o", sharedStateApp.path, "./examples/shared-state").CombinedOutput()
		if err != nil {
			sharedStateApp.err = fmt.Errorf("go build ./examples/shared-state: %v\n%s", err, out)
		}
	})
	if sharedStateApp.err != nil {
		t.Fatal(sharedStateApp.err)
	}
	return sharedStateApp.path
}

// counterAnswer is one answer of examples/shared-state.
type counterAnswer struct {
	count, pid, generation int
	store                  string
}

func askCounter(t *testing.T, addr, store, user string) counterAnswer {
	t.Helper()
	body, err := get(addr, "/"+store+"?user="+user)
	if err != nil {
		t.Fatalf("GET /%s: %v", store, err)
	}
	var a counterAnswer
	var errs []error
	for _, f := range []struct {
		key string
		v   *int
	}{{"count", &a.count}, {"pid", &a.pid}, {"generation", &a.generation}} {
		n, err := strconv.Atoi(field(body, f.key))
		errs = append(errs, err)
		*f.v = n
	}
	a.store = field(body, "store")
	for _, err := range errs {
		if err != nil || a.store != store || field(body, "user") != user {
			t.Fatalf("GET /%s?user=%s: unexpected answer %q", store, user, body)
		}
	}
	return a
}

// perWorker checks in-memory answers: each worker counts each user on
// its own, from 1.
type perWorker struct {
	t       *testing.T
	counts  map[workerUser]int // last count
	history []counterAnswer
}

type workerUser struct {
	pid  int
	user string
}

func newPerWorker(t *testing.T) *perWorker {
	return &perWorker{t: t, counts: map[workerUser]int{}}
}

func (p *perWorker) ask(addr, user string) counterAnswer {
	p.t.Helper()
	a := askCounter(p.t, addr, "memory", user)
	p.history = append(p.history, a)
	k := workerUser{a.pid, user}
	if want := p.counts[k] + 1; a.count != want {
		p.t.Fatalf("in-memory count of %s %d from pid %d, want %d: the count is not per worker; answers so far: %+v", user, a.count, a.pid, want, p.history)
	}
	p.counts[k] = a.count
	return a
}

// killWorker kills pid with SIGKILL and waits until its slot has a ready
// replacement.
func killWorker(t *testing.T, m *master, pid, workersN int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	m.waitStatus(30*time.Second, fmt.Sprintf("pid %d replaced", pid), func(st workers.Status) bool {
		if len(st.Workers) != workersN {
			return false
		}
		for _, w := range st.Workers {
			if w.PID == pid || w.State != workers.Ready {
				return false
			}
		}
		return true
	})
}

// In memory: a count per worker, which jumps as the kernel hands new
// connections to one worker or the other, and starts again at 1 in a
// worker that replaces a crashed one and in every worker of a reload.
func TestSharedStateInMemory(t *testing.T) {
	t.Parallel()
	app := buildSharedState(t)
	m := startMaster(t, []string{"--workers", "2", "--log-level", "info"}, app)
	waitSupervising(t, m)
	m.waitServing(1, 2)
	addr := m.addr()
	p := newPerWorker(t)

	// Until both workers have answered (a few requests at most in
	// practice; the kernel, not handoff, picks the worker).
	var last counterAnswer
	for i := 0; i < 20 || len(p.counts) < 2 && i < 500; i++ {
		last = p.ask(addr, "alice")
	}
	total := len(p.history)
	t.Logf("%d requests, counts per worker: %v", total, p.counts)
	if len(p.counts) < 2 {
		t.Logf("note: one worker took all %d connections; the per-worker check still held", total)
	}

	killWorker(t, m, last.pid, 2)
	seen := len(p.counts)
	for i := 0; len(p.counts) == seen && i < 500; i++ {
		p.ask(addr, "alice") // the replacement's first answer must say 1
	}
	if len(p.counts) == seen {
		t.Logf("note: the replacement of pid %d took no connection in 500 requests", last.pid)
	}

	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: %s%s", stdout, stderr)
	}
	if a := p.ask(addr, "alice"); a.generation != 2 || a.count != 1 {
		t.Fatalf("first answer after the reload: %+v, want generation 2 and count 1", a)
	}
}

// In Redis: one count, whichever worker answers, through a kill -9 of a
// worker, a reload and a master self-upgrade; the in-memory count of the
// same requests starts again each time.
func TestSharedStateRedis(t *testing.T) {
	t.Parallel()
	redis := needExecutable(t, "redis-server", "redis-server")
	app := buildSharedState(t)
	sock := startRedis(t, redis)

	dir := t.TempDir()
	exe := filepath.Join(dir, "handoff")
	install(t, bin.handoff, exe)
	m := startMasterWith(t, exe, nil, []string{"--workers", "2", "--log-level", "info"}, app, "-redis", "unix://"+sock)
	waitSupervising(t, m)
	before := m.waitServing(1, 2)
	addr := m.addr()
	mem := newPerWorker(t)

	next := 1
	ask := func(when string) counterAnswer {
		t.Helper()
		a := askCounter(t, addr, "redis", "bob")
		if a.count != next {
			t.Fatalf("%s: Redis count %d from pid %d, want %d", when, a.count, a.pid, next)
		}
		next++
		mem.ask(addr, "bob")
		return a
	}
	var last counterAnswer
	for i := 0; i < 10; i++ {
		last = ask("before anything")
	}

	killWorker(t, m, last.pid, 2)
	for i := 0; i < 5; i++ {
		ask("after kill -9 of a worker")
	}

	if stdout, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload: %s%s", stdout, stderr)
	}
	if a := ask("after a reload"); a.generation != 2 {
		t.Fatalf("after the reload: answer from generation %d", a.generation)
	}
	if a := mem.ask(addr, "carol"); a.count != 1 {
		t.Fatalf("a user new to generation 2 counted %d in memory", a.count)
	}

	// A different handoff binary and reload --master: a new master
	// takes the sockets over and starts generation 3.
	m.handsOver = true
	install(t, bin.handoff2, exe)
	if stdout, stderr, code := m.cli("reload", "--wait", "--master"); code != 0 {
		t.Fatalf("reload --master: exit %d %s%s", code, stdout, stderr)
	}
	st := m.waitStatus(60*time.Second, "a new master serving", func(st workers.Status) bool {
		return st.PID != before.PID && st.Serving && st.Generation == 3 && countState(st, 3, workers.Ready) == 2 && len(st.Workers) == 2
	})
	t.Cleanup(func() { stopPid(st.PID) })
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("old master exited %d", code)
	}
	for i := 0; i < 5; i++ {
		if a := ask("after a master upgrade"); a.generation != 3 {
			t.Fatalf("after the master upgrade: answer from generation %d", a.generation)
		}
	}
	if got := redisGet(t, sock, "count:bob"); got != strconv.Itoa(next-1) {
		t.Fatalf("Redis holds count:bob=%q, want %d", got, next-1)
	}
	t.Logf("Redis count %d over a kill -9, a reload and a master upgrade; in-memory counts per worker: %v", next-1, mem.counts)
}

// startRedis runs a redis-server on a unix socket in a temporary
// directory, persisting nothing, and returns the socket's path once it
// answers PING.
func startRedis(t *testing.T, redis string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "redis-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	logs := newLogBuf()
	cmd := exec.Command(redis, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if reply, err := redisCommand(sock, "PING"); err == nil && reply == "+PONG" {
			return sock
		}
		select {
		case <-done:
			t.Fatalf("redis-server exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not answering on %s: %s", sock, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisCommand sends one command and returns the first line of the reply.
func redisCommand(sock string, args ...string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		req += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	line = strings.TrimSuffix(line, "\r\n")
	if err != nil || !strings.HasPrefix(line, "$") || line == "$-1" {
		return line, err
	}
	value, err := rd.ReadString('\n')
	return strings.TrimSuffix(value, "\r\n"), err
}

func redisGet(t *testing.T, sock, key string) string {
	t.Helper()
	v, err := redisCommand(sock, "GET", key)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}
