package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// raiseNoFile raises this process's soft RLIMIT_NOFILE to at least n
// (within the hard limit), or skips the test.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d < %d", lim.Max, n)
	}
	old := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// held is how many connections s counts against MaxConns, and how many
// of them are idle.
func (s *Server) counts() (held, idle int) { return s.conns.Counts() }

// Clients that connect and send nothing cannot lock the owner out: with
// 2,000 of them connected, far over the cap, a status request is answered
// (each new connection evicts the oldest idle one), and the server holds
// at most MaxConns connections and 2*MaxConns goroutines.
func TestIdleClientsEvicted(t *testing.T) {
	// Not parallel: it counts this process's goroutines.
	const clients = 2000
	raiseNoFile(t, 2*clients+256)
	ts := startServer(t, nil, nil)
	// One exchange first: Serve and its goroutines are running.
	if r := exchange(t, ts.path, []byte(`{"cmd":"status"}`+"\n"), false); !r.OK {
		t.Fatalf("status: %+v", r)
	}
	<-ts.reqs
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	most := 0
	for range clients {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		if held, idle := ts.srv.counts(); held > MaxConns || idle > MaxConns {
			t.Fatalf("the server holds %d connections (%d idle), cap %d", held, idle, MaxConns)
		}
		most = max(most, runtime.NumGoroutine()-base)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Do(ctx, ts.path, Request{Cmd: "status"})
	if err != nil || !resp.OK {
		t.Fatalf("status with %d idle clients: %+v, %v", clients, resp, err)
	}
	took := time.Since(start)
	most = max(most, runtime.NumGoroutine()-base)
	if most > 2*MaxConns+4 {
		t.Errorf("%d idle clients grew the server by %d goroutines, want at most %d", clients, most, 2*MaxConns)
	}
	if held, idle := ts.srv.counts(); held > MaxConns || idle > MaxConns {
		t.Errorf("the server holds %d connections (%d idle), cap %d", held, idle, MaxConns)
	}
	t.Logf("%d idle clients: status answered in %v; at most %d goroutines more", clients, took.Round(time.Millisecond), most)
	// The first clients were evicted, and told why.
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conns[0]).ReadBytes('\n')
	var r Response
	if err != nil || json.Unmarshal(line, &r) != nil || r.OK || !strings.Contains(r.Error, "was closed for a newer one") {
		t.Errorf("the oldest idle client got %q, %v; want the eviction reply", line, err)
	}
	// Once they are gone, the server is back to its goroutines at rest.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		held, _ := ts.srv.counts()
		if held == 0 && runtime.NumGoroutine() <= base {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the idle clients left: %d connections held, %d goroutines more than at rest", held, runtime.NumGoroutine()-base)
		}
	}
}

// An idle connection is evicted only at the cap, oldest first, and a
// client that has sent its request keeps its connection.
func TestEvictOldestIdle(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		if req.Wait {
			<-release
		}
		return Response{OK: true}
	}, nil)
	// One request in hand: not idle, never evicted.
	waited := make(chan error, 1)
	go func() {
		_, err := Do(context.Background(), ts.path, Request{Cmd: "reload", Wait: true})
		waited <- err
	}()
	<-ts.reqs
	var idle []*net.UnixConn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	dial := func() *net.UnixConn {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		return c
	}
	// Fill the cap with idle clients, and wait until the server holds
	// them all.
	for range MaxConns - 1 {
		dial()
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if held, n := ts.srv.counts(); held == MaxConns && n == MaxConns-1 {
			break
		}
		if time.Now().After(deadline) {
			held, n := ts.srv.counts()
			t.Fatalf("the server holds %d connections, %d idle; want %d, %d", held, n, MaxConns, MaxConns-1)
		}
	}
	// Two more evict the two oldest idle ones, which are told so.
	dial()
	dial()
	for i, c := range idle[:2] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		if err != nil || !strings.Contains(string(line), "was closed for a newer one") {
			t.Errorf("idle client %d: %q, %v; want the eviction reply", i, line, err)
		}
	}
	// The third is still held: it gets an answer to a request it sends
	// now.
	c := idle[2]
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(`{"cmd":"status"}` + "\n"))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), `"ok":true`) {
		t.Errorf("the third idle client: %q, %v; want an answer", line, err)
	}
	select {
	case err := <-waited:
		t.Fatalf("the request in hand ended early: %v", err)
	default:
	}
}

// When every connection has a request in hand, a new one is told at once
// that the server is busy; once they are answered, requests are served.
func TestBusyReply(t *testing.T) {
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
			close(release)
			t.Fatalf("%d of %d waiting reloads reached the handler", n, MaxConns)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := Do(ctx, ts.path, Request{Cmd: "status"})
	cancel()
	close(release)
	if err != nil || resp.OK || !strings.Contains(resp.Error, "control socket busy") {
		t.Errorf("status with every slot taken: %+v, %v; want a busy reply", resp, err)
	}
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
