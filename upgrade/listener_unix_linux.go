//go:build linux

package upgrade

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// setSocketFile gives the socket file at path its mode and owner without
// following a symlink: the file is opened with O_PATH|O_NOFOLLOW, checked
// to be a socket of this process's user, and changed through that
// descriptor (chown with AT_EMPTY_PATH, chmod through /proc/self/fd,
// which names the opened file itself).
func setSocketFile(path string, opts UnixOptions) error {
	if !opts.HasMode && opts.UID < 0 && opts.GID < 0 {
		return nil
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != unix.Geteuid() {
		return fmt.Errorf("%s is no longer the socket just bound (mode %#o, uid %d)", path, st.Mode, st.Uid)
	}
	if opts.UID >= 0 || opts.GID >= 0 {
		if err := unix.Fchownat(fd, "", opts.UID, opts.GID, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if opts.HasMode {
		// After chown, which clears set-id bits a mode might have.
		if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(opts.Mode.Perm())); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}

// renameNoReplace renames from to to, failing with EEXIST if to exists.
func renameNoReplace(from, to string) error {
	return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
}

// shortPath is a name for tmp, the file s in directory priv, that fits
// sun_path: tmp itself, or the same file through a descriptor of priv
// (/proc/self/fd/N/s) while done has not been called.
func shortPath(priv, tmp string) (path string, done func(), err error) {
	if len(tmp) <= 107 {
		return tmp, func() {}, nil
	}
	d, err := unix.Open(priv, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open %s: %w", priv, err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/s", d), func() { unix.Close(d) }, nil
}
