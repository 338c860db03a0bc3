package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxSymlinkHops bounds the symlinks rootOnlyPath follows, as the
// kernel's own lookup does (40).
const maxSymlinkHops = 40

// rootOnlyPath checks that only root can change what path names: every
// directory on the way is root's and writable by root alone (or sticky,
// as /tmp, with the entry in it root's), and every symlink on the way is
// root's. For a master run as root, following a symlink another user may
// flip would let that user choose what root runs at the next upgrade.
// (The file itself is as trusted as it was before: its directory is
// checked, its contents are not.)
func rootOnlyPath(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	todo := components(path)
	cur := "/"
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		dir, err := os.Stat(cur)
		if err != nil {
			return err
		}
		ds, ok := dir.Sys().(*syscall.Stat_t)
		if !ok {
			return errors.New("no owner information")
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return errors.New("no owner information")
		}
		othersWrite := dir.Mode().Perm()&0o022 != 0
		switch {
		case ds.Uid != 0:
			return fmt.Errorf("%s: a directory of uid %d, not root's", cur, ds.Uid)
		case othersWrite && !(dir.Mode()&os.ModeSticky != 0 && st.Uid == 0):
			return fmt.Errorf("%s: a directory others may write to", cur)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if st.Uid != 0 {
			return fmt.Errorf("%s: a symlink of uid %d, not root's", next, st.Uid)
		}
		if hops++; hops > maxSymlinkHops {
			return fmt.Errorf("%s: too many symlinks", path)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return err
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		todo = append(components(target), todo...)
	}
	return nil
}

func components(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}
