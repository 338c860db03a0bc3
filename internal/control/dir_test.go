package control

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testutil"
)

func TestCheckDir(t *testing.T) {
	t.Parallel()
	base := testutil.ShortDir(t)
	euid := os.Geteuid()
	mk := func(name string, mode os.FileMode) string {
		d := filepath.Join(base, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := mk("good", 0o700)
	if err := CheckDir(good, euid); err != nil {
		t.Errorf("a 0700 directory of ours: %v", err)
	}
	if err := CheckDir(mk("r", 0o500), euid); err != nil {
		t.Errorf("a 0500 directory of ours: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	cases := []struct{ dir, want string }{
		{mk("open", 0o777), " has mode 0777, want 0700: group or others may change it"},
		{mk("group", 0o750), " has mode 0750, want 0700"},
		{mk("other", 0o701), " has mode 0701, want 0700"},
		{link, " is a symlink, not a directory of its own"},
		{file, " is not a directory"},
	}
	if euid == 0 {
		theirs := mk("theirs", 0o700)
		if err := os.Chown(theirs, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ dir, want string }{theirs, " is owned by uid 65534, not 0"})
	}
	// As another user, a directory of ours counts as someone else's.
	cases = append(cases, struct{ dir, want string }{good, " is owned by uid " + strconv.Itoa(euid) + ", not " + strconv.Itoa(euid+1)})
	for _, c := range cases {
		e := euid
		if c.dir == good {
			e = euid + 1
		}
		err := CheckDir(c.dir, e)
		if err == nil || !strings.HasPrefix(err.Error(), "control directory "+c.dir+c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckDir(%s) = %v, want one line with %q", c.dir, err, c.want)
		}
	}
	if err := CheckDir(filepath.Join(base, "missing"), euid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing directory: %v", err)
	}
}

// impostor serves a socket at path as another user's process would: it
// answers anything with ok and counts its clients.
func impostor(t *testing.T, path string) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			bufio.NewReader(c).ReadBytes('\n')
			c.Write([]byte(`{"ok":true}` + "\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return &n
}

// The default directory under $TMPDIR, $TMPDIR/handoff-EUID, is trusted
// by neither the server nor the client unless it is a directory of the
// user's own with mode 0700: someone else could have made it first, with
// a socket of theirs in it.
func TestTmpDirChecked(t *testing.T) {
	// Not parallel: it sets $TMPDIR.
	tmp := testutil.ShortDir(t)
	t.Setenv("TMPDIR", tmp)
	euid := os.Geteuid()
	dir := filepath.Join(tmp, "handoff-"+strconv.Itoa(euid))
	path := DefaultPath(func(string) string { return "" }, euid, os.TempDir())
	if euid == 0 {
		path = filepath.Join(dir, "handoff.sock") // root's default is /run/handoff
	}
	if filepath.Dir(path) != dir {
		t.Fatalf("default path %s is not in %s", path, dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Missing: no master, as before; the server makes it 0700.
	if _, err := Do(ctx, path, Request{Cmd: "status"}); err == nil || !strings.Contains(err.Error(), "no handoff master at "+path) {
		t.Errorf("Do with no directory: %v", err)
	}
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatalf("ListenUnix in a new directory: %v", err)
	}
	ln.Close()
	os.RemoveAll(dir)

	// Made first by another user (or left open to all), with a socket
	// of theirs in it.
	for _, tc := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"mode 0777", func() {
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, 0o777)
			if euid == 0 {
				os.Chown(dir, 65534, 65534)
			}
		}, "control directory " + dir + " "},
		{"symlink", func() {
			real := filepath.Join(tmp, "elsewhere")
			os.Mkdir(real, 0o700)
			os.Symlink(real, dir)
		}, "control directory " + dir + " is a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer os.RemoveAll(filepath.Join(tmp, "elsewhere"))
			defer os.RemoveAll(dir)
			tc.setup()
			clients := impostor(t, path)
			resp, err := Do(ctx, path, Request{Cmd: "stop"})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Do = %+v, %v; want one line starting %q", resp, err, tc.want)
			}
			if ln, err := ListenUnix(path); err == nil {
				ln.Close()
				t.Errorf("ListenUnix served in the untrusted directory")
			} else if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("ListenUnix: %v; want %q", err, tc.want)
			}
			if n := clients.Load(); n != 0 {
				t.Errorf("the impostor's socket got %d connections", n)
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 {
				t.Errorf("the other user's socket was removed: %v", err)
			}
		})
	}
	if euid == 0 {
		// Owned by someone else even with mode 0700.
		os.Mkdir(dir, 0o700)
		os.Chown(dir, 65534, 65534)
		want := "control directory " + dir + " is owned by uid 65534, not 0"
		if _, err := Do(ctx, path, Request{Cmd: "stop"}); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Do: %v; want %q", err, want)
		}
		if _, err := ListenUnix(path); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ListenUnix: %v; want %q", err, want)
		}
		os.RemoveAll(dir)
	}

	// Elsewhere, directories are as they were: a socket in $TMPDIR
	// itself (mode 01777) is served and reached.
	other := filepath.Join(tmp, "c.sock")
	ln, err = ListenUnix(other)
	if err != nil {
		t.Fatalf("ListenUnix outside the default directory: %v", err)
	}
	t.Cleanup(func() { ln.Close() }) // after serve's cleanup
	s := FromListener(ln, func(ctx context.Context, req Request) Response { return Response{OK: true} }, nil)
	serve(t, s)
	if resp, err := Do(ctx, other, Request{Cmd: "status"}); err != nil || !resp.OK {
		t.Errorf("Do outside the default directory: %+v, %v", resp, err)
	}
}

// A master that sends an endless line gets a clear error from Do, which
// reads at most MaxReply bytes of it.
func TestDoEndlessReply(t *testing.T) {
	// Not parallel: it measures this process's allocations.
	path := fakeMaster(t, func(c net.Conn) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := Do(ctx, path, Request{Cmd: "status"})
	runtime.ReadMemStats(&after)
	want := "reply from " + path + ": more than 4194304 bytes without a newline"
	if err == nil || err.Error() != want {
		t.Fatalf("Do = %+v, %v; want %q", resp, err, want)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*MaxReply {
		t.Errorf("Do allocated %d bytes for the endless reply, want at most %d", alloc, 8*MaxReply)
	} else {
		t.Logf("endless reply: Do allocated %.1f MiB", float64(alloc)/(1<<20))
	}
}

// A reply just under MaxReply is read whole.
func TestDoLargeReply(t *testing.T) {
	t.Parallel()
	big := `{"ok":true,"result":"` + strings.Repeat("y", MaxReply-100) + `"}` + "\n"
	path := fakeMaster(t, func(c net.Conn) { c.Write([]byte(big)) })
	resp, err := Do(context.Background(), path, Request{Cmd: "status"})
	if err != nil || !resp.OK || len(resp.Result) != MaxReply-100+2 {
		t.Fatalf("Do: ok %v, %d bytes of result, %v", resp.OK, len(resp.Result), err)
	}
}
