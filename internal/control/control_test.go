package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/testutil"
)

type testServer struct {
	path string
	reqs chan Request // every request the handler got
	srv  *Server
}

// startServer serves h on a fresh control socket until the test ends.
// allowed, if set, replaces the peer check.
func startServer(t *testing.T, h Handler, allowed func(uint32) bool) *testServer {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{path: path, reqs: make(chan Request, 100)}
	if h == nil {
		h = func(ctx context.Context, req Request) Response {
			b, _ := json.Marshal(req)
			return Response{OK: true, Result: b}
		}
	}
	s := FromListener(ln, func(ctx context.Context, req Request) Response {
		ts.reqs <- req
		return h(ctx, req)
	}, hclog.NewNullLogger())
	if allowed != nil {
		s.allowed = allowed
	}
	ts.srv = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of its context's end")
		}
		ln.Close()
	})
	return ts
}

// exchange sends payload as is, half-closing the connection after it if
// closeWrite, and returns the reply line.
func exchange(t *testing.T, path string, payload []byte, closeWrite bool) Response {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	// The server may reply and close before reading it all: write
	// concurrently and ignore write errors.
	go func() {
		c.Write(payload)
		if closeWrite {
			c.CloseWrite()
		}
	}()
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("read reply: %v (got %q)", err, line)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return r
}

func TestRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	pad := func(prefix string, total int) string {
		return prefix + strings.Repeat(" ", total-len(prefix)-1) + "\n"
	}
	tests := []struct {
		name    string
		in      string
		half    bool    // half-close after sending
		want    Request // when wantErr is empty
		wantErr string
	}{
		{name: "status", in: `{"cmd":"status"}` + "\n", want: Request{Cmd: "status"}},
		{name: "stop", in: `{"cmd":"stop"}` + "\n", want: Request{Cmd: "stop"}},
		{name: "reload wait master", in: `{"cmd":"reload","wait":true,"master":true}` + "\n", want: Request{Cmd: "reload", Wait: true, Master: true}},
		{name: "whitespace", in: " \t{ \"cmd\" : \"status\" }\r\n", want: Request{Cmd: "status"}},
		{name: "explicit false", in: `{"cmd":"reload","wait":false}` + "\n", want: Request{Cmd: "reload"}},
		{name: "at the limit", in: pad(`{"cmd":"status"}`, MaxRequest), want: Request{Cmd: "status"}},
		{name: "one over the limit", in: pad(`{"cmd":"status"}`, MaxRequest+1), wantErr: "larger than 65536"},
		{name: "no newline, huge", in: strings.Repeat("a", 3*MaxRequest), wantErr: "larger than 65536"},
		{name: "no newline, exactly the limit", in: strings.Repeat("a", MaxRequest), half: true, wantErr: "larger than 65536"},
		{name: "truncated", in: `{"cmd":"status"}`, half: true, wantErr: "truncated request"},
		{name: "empty then EOF", in: "", half: true, wantErr: "truncated request"},
		{name: "empty line", in: "\n", wantErr: "malformed request"},
		{name: "not JSON", in: "status\n", wantErr: "malformed request"},
		{name: "array", in: `["status"]` + "\n", wantErr: "malformed request"},
		{name: "unknown field", in: `{"cmd":"status","force":true}` + "\n", wantErr: "unknown field"},
		{name: "wrong type", in: `{"cmd":"reload","wait":"yes"}` + "\n", wantErr: "malformed request"},
		{name: "cmd not a string", in: `{"cmd":1}` + "\n", wantErr: "malformed request"},
		{name: "missing cmd", in: `{"wait":true}` + "\n", wantErr: `missing "cmd"`},
		{name: "null", in: "null\n", wantErr: `missing "cmd"`},
		{name: "unknown cmd", in: `{"cmd":"restart"}` + "\n", wantErr: `unknown command "restart"`},
		{name: "cmd case", in: `{"cmd":"Status"}` + "\n", wantErr: "unknown command"},
		{name: "JSON split by newline", in: "{\"cmd\":\n\"status\"}\n", wantErr: "malformed request"},
		{name: "trailing garbage", in: `{"cmd":"status"} junk` + "\n", wantErr: "malformed request"},
		{name: "two requests on a line", in: `{"cmd":"status"}{"cmd":"stop"}` + "\n", wantErr: "malformed request"},
		{name: "trailing vertical tab", in: "{\"cmd\":\"status\"}\v\n", wantErr: "data after the JSON object"},
		{name: "trailing no-break space", in: "{\"cmd\":\"status\"}\u00a0\n", wantErr: "data after the JSON object"},
		{name: "duplicate cmd", in: `{"cmd":"status","cmd":"stop"}` + "\n", wantErr: `malformed request: duplicate key "cmd"`},
		{name: "duplicate wait", in: `{"cmd":"reload","wait":false,"wait":true}` + "\n", wantErr: `duplicate key "wait"`},
		{name: "duplicate same value", in: `{"cmd":"stop","cmd":"stop"}` + "\n", wantErr: `duplicate key "cmd"`},
		{name: "duplicate in another case", in: `{"cmd":"status","CMD":"stop"}` + "\n", wantErr: `unknown field "CMD"`},
		{name: "key in another case", in: `{"Cmd":"status"}` + "\n", wantErr: `unknown field "Cmd"`},
		{name: "key folded by unicode", in: "{\"cmd\":\"scale\",\"wor\u212aers\":3}\n", wantErr: "unknown field"},
		{name: "escaped duplicate", in: `{"cmd":"status","\u0063md":"stop"}` + "\n", wantErr: `duplicate key "cmd"`},
		{name: "nested duplicate", in: `{"cmd":{"a":1,"a":2}}` + "\n", wantErr: `duplicate key "a"`},
		{name: "nested in array", in: `{"cmd":[{"x":1},{"x":1,"x":2}]}` + "\n", wantErr: `duplicate key "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := exchange(t, ts.path, []byte(tt.in), tt.half)
			if tt.wantErr == "" {
				got := <-ts.reqs
				if got != tt.want {
					t.Fatalf("handler got %+v, want %+v", got, tt.want)
				}
				var echoed Request
				if !r.OK || r.Error != "" || json.Unmarshal(r.Result, &echoed) != nil || echoed != tt.want {
					t.Fatalf("reply %+v (%s)", r, r.Result)
				}
				return
			}
			if r.OK || !strings.Contains(r.Error, tt.wantErr) {
				t.Fatalf("reply %+v, want an error containing %q", r, tt.wantErr)
			}
			select {
			case req := <-ts.reqs:
				t.Fatalf("the handler was called with %+v for a bad request", req)
			default:
			}
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	start := time.Now()
	r := exchange(t, ts.path, []byte(`{"cmd":`), false) // and then nothing
	if r.OK || !strings.Contains(r.Error, "no complete request within 5s") {
		t.Fatalf("reply %+v", r)
	}
	if d := time.Since(start); d < readTimeout-100*time.Millisecond {
		t.Errorf("gave up after %v, before the %v timeout", d, readTimeout)
	}
}

func TestPeerCheck(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		uids []uint32
	)
	ts := startServer(t, nil, func(uid uint32) bool {
		mu.Lock()
		uids = append(uids, uid)
		mu.Unlock()
		return false
	})
	r := exchange(t, ts.path, []byte(`{"cmd":"stop"}`+"\n"), false)
	if r.OK || !strings.Contains(r.Error, "permission denied") {
		t.Fatalf("reply %+v, want permission denied", r)
	}
	select {
	case req := <-ts.reqs:
		t.Fatalf("a refused peer's request %+v reached the handler", req)
	default:
	}
	mu.Lock()
	if len(uids) != 1 || uids[0] != uint32(os.Getuid()) {
		t.Errorf("peer check saw uids %v, want [%d] (SO_PEERCRED of this process)", uids, os.Getuid())
	}
	mu.Unlock()
	// Do reports the refusal as a reply, not a transport error.
	resp, err := Do(context.Background(), ts.path, Request{Cmd: "stop"})
	if err != nil || resp.OK || !strings.Contains(resp.Error, "permission denied") {
		t.Fatalf("Do = %+v, %v; want the permission denied reply", resp, err)
	}
}

func TestDefaultPeerCheck(t *testing.T) {
	t.Parallel()
	ln, err := ListenUnix(filepath.Join(testutil.ShortDir(t), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := FromListener(ln, nil, hclog.NewNullLogger())
	own := uint32(os.Getuid())
	for _, tt := range []struct {
		uid  uint32
		want bool
	}{{0, true}, {own, true}, {own + 1, own+1 == 0}, {65534, own == 65534}} {
		if got := s.allowed(tt.uid); got != tt.want {
			t.Errorf("allowed(%d) = %v, want %v (own uid %d)", tt.uid, got, tt.want, own)
		}
	}
}

func TestDo(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		if req.Cmd == "stop" {
			return Response{Error: "not now"}
		}
		return Response{OK: true, Result: json.RawMessage(`{"workers":4}`)}
	}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Do(ctx, ts.path, Request{Cmd: "reload", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.OK || string(resp.Result) != `{"workers":4}` {
		t.Errorf("Do = %+v", resp)
	}
	if got := <-ts.reqs; got != (Request{Cmd: "reload", Wait: true}) {
		t.Errorf("handler got %+v", got)
	}
	resp, err = Do(ctx, ts.path, Request{Cmd: "stop"})
	if err != nil || resp.OK || resp.Error != "not now" {
		t.Errorf("Do = %+v, %v; want the handler's error reply", resp, err)
	}
	// A request Do sends is never rejected as malformed.
	resp, err = Do(ctx, ts.path, Request{Cmd: "bogus"})
	if err != nil || !strings.Contains(resp.Error, "unknown command") {
		t.Errorf("Do = %+v, %v", resp, err)
	}
}

func TestDoNoMaster(t *testing.T) {
	t.Parallel()
	dir := testutil.ShortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for _, path := range []string{filepath.Join(dir, "missing.sock"), stale} {
		_, err := Do(context.Background(), path, Request{Cmd: "status"})
		if err == nil || !strings.Contains(err.Error(), "no handoff master at "+path) {
			t.Errorf("Do(%s) error %v, want no handoff master", path, err)
		}
	}
}

// fakeMaster accepts one connection on a fresh socket, reads the request
// line and does what reply says with the connection.
func fakeMaster(t *testing.T, reply func(c net.Conn)) string {
	t.Helper()
	path := filepath.Join(testutil.ShortDir(t), "f.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bufio.NewReader(c).ReadBytes('\n')
		reply(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return path
}

func TestDoBadReplies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		reply   func(c net.Conn)
		wantErr string
	}{
		{"garbage", func(c net.Conn) { c.Write([]byte("garbage\n")) }, "malformed reply"},
		{"closed without reply", func(c net.Conn) {}, "read reply"},
		{"no newline", func(c net.Conn) { c.Write([]byte(`{"ok":true}`)) }, "read reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fakeMaster(t, tt.reply)
			resp, err := Do(context.Background(), path, Request{Cmd: "status"})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Do = %+v, %v; want an error containing %q", resp, err, tt.wantErr)
			}
		})
	}
}

// TestDoTimeout gives up on a master that does not answer in time, and
// the handler's context ends once the client is gone.
func TestDoTimeout(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		close(started)
		select {
		case <-ctx.Done():
			cancelled <- ctx.Err()
		case <-time.After(10 * time.Second):
			cancelled <- nil
		}
		return Response{OK: true}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Do(ctx, ts.path, Request{Cmd: "reload", Wait: true})
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not called")
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "no reply from") {
			t.Fatalf("Do error %v, want no reply: context canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return within 5s of its context's end")
	}
	if err := <-cancelled; err == nil {
		t.Fatal("the handler's context was not cancelled when the client went away")
	}
}

func TestDoDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Response{OK: true}
	}, nil)
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Do(ctx, ts.path, Request{Cmd: "status"})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Do took %v with a 200ms deadline", d)
	}
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no reply from") {
		t.Fatalf("Do error %v, want no reply: context deadline exceeded", err)
	}
}

// TestHalfClose sends a request and shuts down the sending side, as
// `socat` or `nc -N` do: the client is still there to read the reply, so
// a waiting reload must not be given up.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(ctx context.Context, req Request) Response {
		select {
		case <-ctx.Done():
			return Response{Error: "gave up waiting: " + ctx.Err().Error()}
		case <-time.After(300 * time.Millisecond): // the reload takes a while
			return Response{OK: true}
		}
	}, nil)
	r := exchange(t, ts.path, []byte(`{"cmd":"reload","wait":true}`+"\n"), true)
	if !r.OK {
		t.Fatalf("reply %+v", r)
	}
}

// TestServeStop checks that Serve returns once its context ends and the
// requests in progress have been answered.
func TestServeStop(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	inHandler := make(chan struct{})
	var handlerDone atomic.Bool
	s := FromListener(ln, func(ctx context.Context, req Request) Response {
		close(inHandler)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // winding down takes a moment
		handlerDone.Store(true)
		return Response{Error: "master stopping"}
	}, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx)
	}()
	replyc := make(chan Response, 1)
	go func() {
		resp, _ := Do(context.Background(), path, Request{Cmd: "reload", Wait: true})
		replyc <- resp
	}()
	select {
	case <-inHandler:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not called")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return within 5s")
	}
	if !handlerDone.Load() {
		t.Error("Serve returned before the request in progress was answered")
	}
	select {
	case r := <-replyc:
		if r.Error != "master stopping" {
			t.Errorf("in-flight request got %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight request got no reply")
	}
	// The path stays for a successor master.
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the control socket path is gone: %v", err)
	}
}

func TestListenUnix(t *testing.T) {
	t.Parallel()
	dir := testutil.ShortDir(t)
	path := filepath.Join(dir, "sub", "ctl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, %v; want a 0600 socket", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, %v; want 0700", di.Mode(), err)
	}

	// A live master's socket is not replaced.
	if ln2, err := ListenUnix(path); err == nil {
		ln2.Close()
		t.Fatal("ListenUnix replaced a live control socket")
	} else if !strings.Contains(err.Error(), "in use by another running handoff") {
		t.Errorf("error %q", err)
	}

	// Closing does not remove the path; a new master replaces it as stale.
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed the control socket: %v", err)
	}
	ln, err = ListenUnix(path)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()

	// A path that is not a socket is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if ln, err := ListenUnix(file); err == nil {
		ln.Close()
		t.Fatal("ListenUnix replaced a regular file")
	} else if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("error %q", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("the file was changed: %q", b)
	}
}

// A listener closed under Serve ends it (one log line), rather than a
// loop of failed accepts.
func TestServeListenerClosed(t *testing.T) {
	t.Parallel()
	ln, err := ListenUnix(filepath.Join(testutil.ShortDir(t), "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	s := FromListener(ln, nil, hclog.New(&hclog.LoggerOptions{Output: &logs}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(context.Background())
	}()
	ln.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve went on after its listener was closed")
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), "control socket closed while serving") {
		t.Errorf("log: %q", logs.String())
	}
}

// Clients that have sent nothing when Serve's context ends are told the
// master is stopping, and Serve does not wait out their read timeout.
func TestServeStopIdle(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.ShortDir(t), "c.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := FromListener(ln, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx)
	}()
	// Not ln.Addr(): the socket was bound in a private directory and
	// renamed into place, and the kernel keeps the name it was bound
	// with.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, idle := s.counts(); idle == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not take the connection")
		}
	}
	cancel()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure bound: the reply says which path it took
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil || !strings.Contains(string(line), "master stopping") {
		t.Errorf("idle client at stop: %q, %v", line, err)
	}
	<-done
}
