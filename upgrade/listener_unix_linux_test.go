//go:build linux

package upgrade

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// leftovers fails the test if dir holds anything but want.
func leftovers(t *testing.T, dir string, want ...string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

// ownerOf is the uid, gid and permission bits of path (not followed).
func ownerOf(t *testing.T, path string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode()
}

// The socket appears at its path with its mode (and, as root, its owner)
// already set, and the private directory it was made in is gone.
func TestBindUnixModeAndOwner(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	opts := UnixOptions{Mode: 0o660, HasMode: true, UID: -1, GID: -1}
	if os.Geteuid() == 0 {
		opts.UID, opts.GID = 65534, 65534
	}
	fd, err := BindUnix(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	uid, gid, mode := ownerOf(t, path)
	if mode != os.ModeSocket|0o660 {
		t.Errorf("mode %v, want %v", mode, os.ModeSocket|0o660)
	}
	if os.Geteuid() == 0 && (uid != 65534 || gid != 65534) {
		t.Errorf("owner %d:%d, want 65534:65534", uid, gid)
	}
	leftovers(t, dir, "app.sock")
	if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l != 1 {
		t.Errorf("socket not listening: %d, %v", l, err)
	}
}

// A process that swaps a symlink in while the socket is made (here, the
// AfterBind hook plays it) cannot make the mode or owner land on the
// file the symlink points to: the socket's own name in its private
// directory is opened without following, and the rename into place never
// replaces what appeared at the path. The target stays as it was, the
// bind fails with one error, and nothing is left behind.
func TestBindUnixSymlinkSwapInWindow(t *testing.T) {
	for _, c := range []struct {
		name string
		swap func(t *testing.T, tmp, final, target string)
		want string
	}{
		{"the socket in its directory", func(t *testing.T, tmp, final, target string) {
			if err := os.Remove(tmp); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(target, tmp); err != nil {
				t.Error(err)
			}
		}, "is no longer the socket just bound"},
		{"the final path", func(t *testing.T, tmp, final, target string) {
			if err := os.Symlink(target, final); err != nil {
				t.Error(err)
			}
		}, "appeared while the socket was made"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			secret := t.TempDir()
			target := filepath.Join(secret, "shadow")
			if err := os.WriteFile(target, []byte("root only\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			tu, tg, tm := ownerOf(t, target)
			path := filepath.Join(dir, "app.sock")
			opts := UnixOptions{Mode: 0o666, HasMode: true, UID: -1, GID: -1}
			if os.Geteuid() == 0 {
				opts.UID, opts.GID = 65534, 65534
			}
			called := false
			opts.AfterBind = func(tmp, final string) {
				called = true
				c.swap(t, tmp, final, target)
			}
			fd, err := BindUnix(path, opts)
			if err == nil {
				unix.Close(fd)
				t.Fatal("BindUnix succeeded with a symlink swapped in")
			}
			if !called {
				t.Fatal("AfterBind was not called")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to say %q", err, c.want)
			}
			if u, g, m := ownerOf(t, target); u != tu || g != tg || m != tm {
				t.Errorf("target changed: %d:%d %v, was %d:%d %v", u, g, m, tu, tg, tm)
			}
			if b, _ := os.ReadFile(target); string(b) != "root only\n" {
				t.Errorf("target content %q", b)
			}
			if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("%s is a %v: the socket was put there anyway", path, fi.Mode())
			}
			os.Remove(path) // the test's own symlink
			leftovers(t, dir)
		})
	}
}

// A directory every user may write without the sticky bit is refused
// before anything is made in it; with the sticky bit (as /tmp) it is
// fine.
func TestBindUnixWorldWritableParent(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := BindUnix(filepath.Join(dir, "app.sock"), NoOwner)
	want := "directory " + dir + " is writable by every user and has no sticky bit"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	leftovers(t, dir)
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	fd, err := BindUnix(filepath.Join(dir, "app.sock"), NoOwner)
	if err != nil {
		t.Fatalf("sticky directory: %v", err)
	}
	unix.Close(fd)
	leftovers(t, dir, "app.sock")
}

// A path near the sun_path limit still binds: the private directory's
// longer name is reached through a descriptor.
func TestBindUnixLongPath(t *testing.T) {
	dir := t.TempDir()
	name := strings.Repeat("s", 107-len(dir)-1)
	path := filepath.Join(dir, name)
	if len(path) != 107 {
		t.Fatalf("path is %d bytes", len(path))
	}
	fd, err := BindUnix(path, UnixOptions{Mode: 0o600, HasMode: true, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, _, mode := ownerOf(t, path); mode != os.ModeSocket|0o600 {
		t.Errorf("mode %v", mode)
	}
	leftovers(t, dir, name)
}
