package control

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/testutil"
)

// serve runs s until the test ends.
func serve(t *testing.T, s *Server) {
	t.Helper()
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
	})
}

// TestHelperClient is not a test: run by TestRefuseHook as another
// process, it sends a status request to $HANDOFF_TEST_CONTROL and prints
// the reply's error.
func TestHelperClient(t *testing.T) {
	path := os.Getenv("HANDOFF_TEST_CONTROL")
	if path == "" {
		t.Skip("only run as a helper process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Do(ctx, path, Request{Cmd: "status"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("ok=%v error=%s\n", resp.OK, resp.Error)
	os.Exit(0)
}

// Refuse sees each peer's pid, from the kernel, and what it returns
// turns the peer away before its request is read: here, every process
// but this one (as the master would turn away its workers).
func TestRefuseHook(t *testing.T) {
	t.Parallel()
	path := filepath.Join(testutil.ShortDir(t), "ctl.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var (
		mu   sync.Mutex
		pids []int32
	)
	handled := make(chan Request, 4)
	self := int32(os.Getpid())
	s := NewServer(ln, func(ctx context.Context, req Request) Response {
		handled <- req
		return Response{OK: true}
	}, hclog.NewNullLogger(), Options{Refuse: func(pid int32) error {
		mu.Lock()
		pids = append(pids, pid)
		mu.Unlock()
		if pid != self {
			return fmt.Errorf("pid %d is one of the master's workers", pid)
		}
		return nil
	}})
	serve(t, s)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClient$")
	cmd.Env = append(os.Environ(), "HANDOFF_TEST_CONTROL="+path)
	out, err := cmd.CombinedOutput()
	child := cmd.Process.Pid
	want := "ok=false error=permission denied: pid " + strconv.Itoa(child) + " is one of the master's workers\n"
	if err != nil || string(out) != want {
		t.Fatalf("the other process got %q (%v), want %q", out, err, want)
	}
	select {
	case req := <-handled:
		t.Fatalf("a refused peer's request %+v reached the handler", req)
	default:
	}
	// This process is let in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := Do(ctx, path, Request{Cmd: "status"}); err != nil || !resp.OK {
		t.Fatalf("status from the test process: %+v, %v", resp, err)
	}
	<-handled
	mu.Lock()
	defer mu.Unlock()
	if len(pids) != 2 || pids[0] != int32(child) || pids[1] != self {
		t.Errorf("Refuse saw pids %v, want [%d %d]", pids, child, self)
	}
}

// Without a Refuse hook (FromListener), the pid is not asked about.
func TestNoRefuseHook(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	if r := exchange(t, ts.path, []byte(`{"cmd":"status"}`+"\n"), false); !r.OK || strings.Contains(r.Error, "denied") {
		t.Fatalf("reply %+v", r)
	}
}
