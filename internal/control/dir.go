package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// tmpDir is the directory DefaultPath picks for a user without a runtime
// directory: $TMPDIR/handoff-EUID. Anyone can create it first there.
func tmpDir(euid int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("handoff-%d", euid))
}

// inTmpDir reports whether path is a socket in tmpDir: the directory
// whose owner and mode both the server and the client check.
func inTmpDir(path string) bool {
	return filepath.Clean(filepath.Dir(path)) == filepath.Clean(tmpDir(os.Geteuid()))
}

// CheckDir says why dir cannot be trusted with the control socket of a
// master running as euid: it must be a directory itself (not a symlink to
// one), owned by euid, with no permission bits for group or others (mode
// 0700 or less). Another user who created it first could otherwise put
// its own socket there. The error names dir and the one problem found;
// a missing dir is an error wrapping fs.ErrNotExist.
func CheckDir(dir string, euid int) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control directory %s: %w", dir, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("control directory %s is a symlink, not a directory of its own (remove it, or use --control)", dir)
	case !fi.IsDir():
		return fmt.Errorf("control directory %s is not a directory (remove it, or use --control)", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("control directory %s: cannot tell its owner", dir)
	}
	if int(st.Uid) != euid {
		return fmt.Errorf("control directory %s is owned by uid %d, not %d (another user may have made it: remove it, or use --control)", dir, st.Uid, euid)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("control directory %s has mode %#o, want 0700: group or others may change it (chmod 700 it, or use --control)", dir, perm)
	}
	return nil
}

// checkTmpDir checks path's directory with CheckDir if path is in
// tmpDir, and is nil otherwise.
func checkTmpDir(path string) error {
	if !inTmpDir(path) {
		return nil
	}
	return CheckDir(filepath.Dir(path), os.Geteuid())
}

// isNotExist reports whether err says a path does not exist.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}
