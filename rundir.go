package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runtimeDirLock is the file in a master's runtime directory (the
// workers' notify sockets) on which the master holds an exclusive flock
// for as long as it lives. The kernel drops the lock when the process
// dies, however it dies, so a directory whose lock is free belongs to no
// live master.
const runtimeDirLock = ".handoff-master.lock"

// claimRuntimeDir marks dir as this master's runtime directory: it
// creates the lock file in it and holds an flock on it (on a
// close-on-exec descriptor, so neither workers nor a successor master
// inherit it) until release is called. The lock is taken before the
// file gets its name, so a sweeping master never sees it unlocked.
func claimRuntimeDir(dir string) (release func(), err error) {
	tmp, err := os.CreateTemp(dir, ".lock-")
	if err != nil {
		return nil, fmt.Errorf("runtime directory lock: %w", err)
	}
	fail := func(err error) (func(), error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("runtime directory lock: %w", err)
	}
	if err := flock(tmp, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, runtimeDirLock)); err != nil {
		return fail(err)
	}
	return func() { tmp.Close() }, nil
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if !errors.Is(ferr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// sweepRuntimeDirs removes the runtime directories that dead masters
// left in parent (a master killed with SIGKILL cannot clean up): the
// directories named handoff-* that belong to this user and hold a lock
// file no live process has locked. Directories without a lock file
// (another handoff's control socket directory, an older master's) are
// left alone. It returns the directories it removed.
func sweepRuntimeDirs(parent string) ([]string, error) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil, fmt.Errorf("sweep runtime directories: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "handoff-") {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || !ownedByMe(fi) {
			continue
		}
		stale, err := lockIsFree(filepath.Join(dir, runtimeDirLock))
		if err != nil || !stale {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// lockIsFree reports whether the lock file at path exists and no process
// holds its lock.
func lockIsFree(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil // released by Close
}
