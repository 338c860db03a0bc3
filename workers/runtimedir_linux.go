package workers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// makeRuntimeDir makes the private directory of the workers' notify
// sockets, handoff-<pid namespace>-<pid>-<random> in the temporary
// directory, after removing those of masters of this pid namespace that
// died without removing theirs (SIGKILL).
func makeRuntimeDir() (string, error) {
	ns := pidNamespace()
	prefix := fmt.Sprintf("handoff-%d-", ns)
	if ents, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), prefix)
			if !ok || !e.IsDir() {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid <= 0 || pid == os.Getpid() || !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
				continue
			}
			dir := filepath.Join(os.TempDir(), e.Name())
			if fi, err := os.Lstat(dir); err == nil && ownedByUs(fi) {
				os.RemoveAll(dir)
			}
		}
	}
	dir, err := os.MkdirTemp("", prefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("runtime directory: %w", err)
	}
	return dir, nil
}

// ownedByUs reports whether a file belongs to this process's user.
func ownedByUs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uint32(os.Geteuid())
}
