package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// UnixOptions say how BindUnix creates a unix socket's file.
type UnixOptions struct {
	// Mode is the socket file's mode, if HasMode; else it keeps the one
	// bind(2) gives (0777 less the umask).
	Mode    os.FileMode
	HasMode bool
	// UID and GID own the socket file; -1 keeps the process's.
	UID, GID int
	// AfterBind, if set, is called once the socket is bound and
	// listening at tmp, in its private directory, before its mode and
	// owner are set and it is renamed to final. Tests use it to play a
	// process that swaps in a symlink in that window; nil in production.
	AfterBind func(tmp, final string)
}

// NoOwner is UnixOptions that keep the mode bind(2) gives and the
// process's owner.
var NoOwner = UnixOptions{UID: -1, GID: -1}

// BindUnix creates a listening unix socket at path whose file has its
// final mode and owner from the start, so that no process can make it
// change another file's. A stale socket at path (its process died) is
// removed first; a live one is an error wrapping ErrSocketInUse.
//
// The socket is bound in a private directory (mode 0700, made next to
// path so that rename(2) stays on one file system), given its mode and
// owner there without following symlinks, and renamed into place, which
// fails rather than replace anything that appeared at path meanwhile. A
// parent directory that others may write without the sticky bit is
// refused: anyone could rename or replace the socket there. An abstract
// socket ("@name") has no file and is bound directly.
func BindUnix(path string, opts UnixOptions) (fd int, err error) {
	if strings.HasPrefix(path, "@") {
		return bindUnixAt(path, path)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return -1, fmt.Errorf("socket directory: %w", err)
	}
	if !st.IsDir() {
		return -1, fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o002 != 0 && st.Mode()&os.ModeSticky == 0 {
		return -1, fmt.Errorf("directory %s is writable by every user and has no sticky bit: any of them could replace the socket; use another directory", dir)
	}
	if err := RemoveStaleSocket(path); err != nil {
		return -1, err
	}
	priv, err := os.MkdirTemp(dir, ".handoff-")
	if err != nil {
		return -1, fmt.Errorf("private directory for the socket: %w", err)
	}
	defer os.RemoveAll(priv)
	tmp := filepath.Join(priv, "s")
	// sun_path holds 107 bytes; the private directory's name adds to
	// the path, so bind through the directory's descriptor if needed.
	bindPath, done, err := shortPath(priv, tmp)
	if err != nil {
		return -1, err
	}
	fd, err = bindUnixAt(bindPath, path)
	done()
	if err != nil {
		return -1, err
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if opts.AfterBind != nil {
		opts.AfterBind(tmp, path)
	}
	if err := setSocketFile(tmp, opts); err != nil {
		return -1, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := renameNoReplace(tmp, path); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("bind: %s appeared while the socket was made; not replacing it", path)
		}
		return -1, fmt.Errorf("rename socket into place: %w", err)
	}
	return fd, nil
}

// bindUnixAt binds and listens on a new unix socket at bindPath; path
// names it in errors.
func bindUnixAt(bindPath, path string) (int, error) {
	fd, err := socket(unix.AF_UNIX, unix.SOCK_STREAM)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: bindPath}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return -1, fmt.Errorf("bind: %s exists and is not a socket handoff may replace", path)
		}
		return -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, backlog()); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen: %w", err)
	}
	return fd, nil
}

// ListenerWith is Listener with the mode and owner of a unix socket it
// binds (see BindUnix): a socket handed over by the previous master or
// by systemd is adopted as it is.
func (m *Master) ListenerWith(spec Spec, activated map[string]int, opts UnixOptions) (*Listener, error) {
	if fd, ok := m.fds[spec.Name]; ok {
		delete(m.fds, spec.Name)
		return fromFd(spec, fd)
	}
	if fd, ok := activated[spec.Name]; ok {
		return fromFd(spec, fd)
	}
	if len(activated) > 0 {
		return nil, fmt.Errorf("listen %s: socket activation passed no socket named %q (FileDescriptorName=); it passed %s", spec, spec.Name, names(activated))
	}
	return BindWith(spec, opts)
}
