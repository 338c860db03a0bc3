package control

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/testutil"
)

// Idle clients that connect and send nothing hold at most MaxConns
// connections (and goroutines) in the master; the others wait in the
// kernel's backlog, and are served once the first ones are gone.
func TestIdleClientsBounded(t *testing.T) {
	// Not parallel: it counts this process's goroutines.
	ts := startServer(t, nil, nil)
	base := runtime.NumGoroutine()
	const clients = 4 * MaxConns
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// The server takes MaxConns of them (a goroutine each) ...
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine()-base < MaxConns {
		if time.Now().After(deadline) {
			t.Fatalf("the server took only %d idle connections in 20s", runtime.NumGoroutine()-base)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// ... and no more, however long they idle (within the read timeout,
	// after which it answers them and takes the next ones).
	most := 0
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		most = max(most, runtime.NumGoroutine()-base)
		time.Sleep(5 * time.Millisecond)
	}
	if most > MaxConns+4 {
		t.Fatalf("%d idle clients grew the server by %d goroutines, want at most %d", clients, most, MaxConns)
	}
	t.Logf("%d idle clients: at most %d goroutines more", clients, most)
	// Once the idle clients are gone, a real one is served.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := Do(ctx, ts.path, Request{Cmd: "status"}); err != nil || !resp.OK {
		t.Fatalf("status after the idle clients left: %+v, %v", resp, err)
	}
}

// A request already in hand keeps its slot; a request beyond the cap is
// answered once a slot frees.
func TestCapQueues(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	inHandler := 0
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		if req.Wait {
			mu.Lock()
			inHandler++
			mu.Unlock()
			<-release
		}
		return Response{OK: true}
	}, nil)
	errc := make(chan error, MaxConns)
	for range MaxConns {
		go func() {
			_, err := Do(context.Background(), ts.path, Request{Cmd: "reload", Wait: true})
			errc <- err
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := inHandler
		mu.Unlock()
		if n == MaxConns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waiting reloads reached the handler", n, MaxConns)
		}
	}
	// Every slot is taken: a status request waits ...
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := Do(ctx, ts.path, Request{Cmd: "status"})
	cancel()
	if err == nil {
		t.Fatal("a request beyond the cap was answered while every slot was taken")
	}
	// ... until they are free.
	close(release)
	for range MaxConns {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := Do(ctx, ts.path, Request{Cmd: "status"}); err != nil || !resp.OK {
		t.Fatalf("status: %+v, %v", resp, err)
	}
}

// A flood of bad requests gets at most a line a second in the log, and
// the next line says how many were held back.
func TestBadRequestLogBounded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var logs testutil.Buffer
	s := FromListener(ln, func(ctx context.Context, req Request) Response { return Response{OK: true} },
		hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	const bad = 300
	start := time.Now()
	for i := range bad {
		r := exchange(t, path, []byte("junk\n"), false)
		if r.OK || !strings.Contains(r.Error, "malformed request") {
			t.Fatalf("request %d: reply %+v", i, r)
		}
	}
	elapsed := time.Since(start)
	lines := strings.Count(logs.String(), "bad request")
	if limit := int(elapsed/time.Second) + 1; lines > limit || lines < 1 {
		t.Fatalf("%d bad requests in %v logged %d lines, want 1 to %d:\n%s", bad, elapsed, lines, limit, logs.String())
	}
	t.Logf("%d bad requests in %v: %d log lines", bad, elapsed.Round(time.Millisecond), lines)
}

func TestLogLimit(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLogLimit(time.Second)
	l.now = func() time.Time { return now }
	var out bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Debug, DisableTime: true})
	for range 100 {
		l.log(log, hclog.Warn, "bad request", "error", "x")
		l.log(log, hclog.Warn, "refused peer", "uid", 7)
	}
	if got := strings.Count(out.String(), "\n"); got != 2 {
		t.Fatalf("100 of each of two messages at one instant: %d lines, want 2:\n%s", got, out.String())
	}
	now = now.Add(999 * time.Millisecond)
	l.log(log, hclog.Warn, "bad request", "error", "x")
	now = now.Add(time.Millisecond)
	l.log(log, hclog.Warn, "bad request", "error", "y")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "error=y suppressed=100") {
		t.Fatalf("after a second: %q, want a third line with suppressed=100", lines)
	}
}

func TestScaleRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	for _, c := range []struct {
		in      string
		want    Request
		wantErr string
	}{
		{in: `{"cmd":"scale","workers":3}`, want: Request{Cmd: "scale", Workers: 3}},
		{in: `{"cmd":"scale","workers":1024}`, want: Request{Cmd: "scale", Workers: 1024}},
		{in: `{"cmd":"scale"}`, wantErr: `scale: "workers" must be a number from 1 to 1024`},
		{in: `{"cmd":"scale","workers":0}`, wantErr: `scale: "workers" must be`},
		{in: `{"cmd":"scale","workers":-2}`, wantErr: `scale: "workers" must be`},
		{in: `{"cmd":"scale","workers":1025}`, wantErr: `scale: "workers" must be`},
		{in: `{"cmd":"scale","workers":"3"}`, wantErr: "malformed request"},
		{in: `{"cmd":"scale","workers":2.5}`, wantErr: "malformed request"},
		{in: `{"cmd":"status","workers":3}`, wantErr: `"workers" is for scale, not status`},
		{in: `{"cmd":"reload","workers":3}`, wantErr: `"workers" is for scale, not reload`},
		{in: `{"cmd":"resize","workers":3}`, wantErr: `unknown command "resize" (want status, reload, stop or scale)`},
	} {
		r := exchange(t, ts.path, []byte(c.in+"\n"), false)
		if c.wantErr != "" {
			if r.OK || !strings.Contains(r.Error, c.wantErr) {
				t.Errorf("%s: reply %+v, want an error with %q", c.in, r, c.wantErr)
			}
			continue
		}
		if got := <-ts.reqs; got != c.want || !r.OK {
			t.Errorf("%s: handler got %+v (reply %+v), want %+v", c.in, got, r, c.want)
		}
	}
	// Do sends what the handler gets.
	resp, err := Do(context.Background(), ts.path, Request{Cmd: "scale", Workers: 7})
	if err != nil || !resp.OK {
		t.Fatalf("Do scale: %+v, %v", resp, err)
	}
	if got := <-ts.reqs; got != (Request{Cmd: "scale", Workers: 7}) {
		t.Errorf("handler got %+v", got)
	}
}

func TestCheckPath(t *testing.T) {
	t.Parallel()
	ok := "/" + strings.Repeat("a", MaxPath-1)
	if err := CheckPath(ok); err != nil {
		t.Errorf("a %d-byte path: %v", len(ok), err)
	}
	if err := CheckPath(ok + "b"); err == nil || err.Error() != "unix socket path is 108 bytes, the limit is 107" {
		t.Errorf("a 108-byte path: %v", err)
	}
	if err := CheckPath("/a\x00b"); err == nil {
		t.Error("a path with NUL accepted")
	}
	// ListenUnix says the same, and creates nothing.
	dir := testutil.ShortDir(t)
	long := filepath.Join(dir, "sub", strings.Repeat("c", 120))
	if ln, err := ListenUnix(long); err == nil {
		ln.Close()
		t.Fatal("ListenUnix took a path over the limit")
	} else if !strings.Contains(err.Error(), "the limit is 107") {
		t.Errorf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); err == nil {
		t.Error("ListenUnix created the directory of a path it refused")
	}
}

func TestMkdirAll(t *testing.T) {
	t.Parallel()
	dir := testutil.ShortDir(t)
	created, err := mkdirAll(filepath.Join(dir, "a", "b", "c"), 0o700)
	want := []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), filepath.Join(dir, "a", "b", "c")}
	if err != nil || strings.Join(created, " ") != strings.Join(want, " ") {
		t.Fatalf("mkdirAll = %q, %v; want %q", created, err, want)
	}
	for _, d := range want {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
	if created, err := mkdirAll(filepath.Join(dir, "a", "b"), 0o700); err != nil || len(created) != 0 {
		t.Errorf("existing: %q, %v", created, err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		getenv func(string) string
		euid   int
		want   string
	}{
		{env("RUNTIME_DIRECTORY", "/run/app:/run/other", "XDG_RUNTIME_DIR", "/run/user/0"), 0, "/run/app/handoff.sock"},
		{env("XDG_RUNTIME_DIR", "/run/user/1000"), 1000, "/run/user/1000/handoff.sock"},
		{env("XDG_RUNTIME_DIR", "/run/user/0"), 0, "/run/user/0/handoff.sock"},
		{env(), 0, "/run/handoff/handoff.sock"},
		{env(), 1000, "/tmp/handoff-1000/handoff.sock"},
	} {
		if got := DefaultPath(c.getenv, c.euid, "/tmp"); got != c.want {
			t.Errorf("DefaultPath(euid %d) = %s, want %s", c.euid, got, c.want)
		}
	}
}

// WaitExit sees a zombie as gone: kill(pid, 0) would not.
func TestWaitExitZombie(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Wait()

	// Alive: WaitExit waits until its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := WaitExit(ctx, pid)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitExit on a live process: %v, want context deadline exceeded", err)
	}

	// Killed and not reaped (cmd.Wait has not run): a zombie.
	cmd.Process.Signal(syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); !isZombie(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie", pid)
		}
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("kill(pid, 0) fails for the zombie: the test shows nothing")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitExit(ctx, pid); err != nil {
		t.Fatalf("WaitExit on a zombie: %v", err)
	}
	cmd.Wait()
	// Gone altogether.
	if err := WaitExit(ctx, pid); err != nil {
		t.Fatalf("WaitExit on a reaped pid: %v", err)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// The fallback for kernels without pidfds returns once the process is
// reaped, and honours its context.
func TestPollKill(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := pollKill(ctx, pid)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("pollKill on a live process: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pollKill(ctx, pid); err != nil {
		t.Fatalf("pollKill on a reaped process: %v", err)
	}
}
