//go:build !linux

package upgrade

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// setSocketFile gives the socket file at path, inside a private directory
// nobody else may enter, its mode and owner without following a symlink
// (lchown; a symlink is refused before chmod).
func setSocketFile(path string, opts UnixOptions) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s is no longer the socket just bound", path)
	}
	if opts.UID >= 0 || opts.GID >= 0 {
		if err := os.Lchown(path, opts.UID, opts.GID); err != nil {
			return err
		}
	}
	if opts.HasMode {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, uint32(opts.Mode.Perm()), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}

// renameNoReplace renames from to to, failing if to exists: a hard link,
// which never replaces, then removal of the old name.
func renameNoReplace(from, to string) error {
	if err := os.Link(from, to); err != nil {
		if os.IsExist(err) {
			return unix.EEXIST
		}
		return err
	}
	return os.Remove(from)
}

// shortPath is tmp: bind reports a path too long for sun_path.
func shortPath(priv, tmp string) (path string, done func(), err error) {
	return tmp, func() {}, nil
}
