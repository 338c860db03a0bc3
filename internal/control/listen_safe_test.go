package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/testutil"
	"github.com/handoff-dev/handoff/upgrade"
)

// The control socket is never made in a directory every user may write
// without the sticky bit: one clear error, and nothing left there.
func TestListenUnixWorldWritableDir(t *testing.T) {
	dir := testutil.ShortDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := ListenUnix(filepath.Join(dir, "c.sock"))
	if err == nil {
		ln.Close()
		t.Fatal("ListenUnix succeeded in a world-writable directory")
	}
	want := "control socket: directory " + dir + " is writable by every user and has no sticky bit"
	if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q, want one line starting %q", err, want)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("%s holds %v", dir, es)
	}
}

// The control socket's mode is set before it appears at its path, never
// through a symlink: one swapped in for it while it is made leaves the
// file it points to as it was.
func TestListenUnixSymlinkSwap(t *testing.T) {
	dir := testutil.ShortDir(t)
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.sock")
	opts := upgrade.UnixOptions{Mode: 0o600, HasMode: true, UID: -1, GID: -1}
	opts.AfterBind = func(tmp, final string) {
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			t.Error(err)
		}
	}
	if ln, err := listenUnix(path, opts); err == nil {
		ln.Close()
		t.Fatal("listenUnix succeeded with a symlink swapped in")
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("target: %v, %v; want mode 0644 as it was", fi, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("%s holds %v", dir, es)
	}
	// And without the swap the socket is there with mode 0600.
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode() != os.ModeSocket|0o600 {
		t.Errorf("control socket: %v, %v; want a socket with mode 0600", fi, err)
	}
}
