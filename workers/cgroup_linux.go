package workers

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups is the cgroup v2 directory under which each worker gets a
// cgroup of its own, so that its whole tree (processes that called setsid
// too) is signalled and killed with it, and the master knows when the
// tree is gone. It is made inside the master's own cgroup, which the
// master may write to as root or when systemd delegated it
// (Delegate=yes); elsewhere openCgroups fails and workers' trees are
// their process groups.
//
// Layout: <master's cgroup>/handoff-<pidns>-<pid>-<random>/<worker name>.
// The pid namespace and pid let a later master recognise, and clean up,
// what a killed master left behind, without touching a live master's.
type cgroups struct {
	base string
}

// openCgroups makes the directory for this master's worker cgroups.
func openCgroups() (*cgroups, error) {
	mount, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	parent := filepath.Join(mount, own)
	if err := unix.Access(parent, unix.W_OK); err != nil {
		return nil, fmt.Errorf("cannot create cgroups in %s (run as root, or under systemd with Delegate=yes): %w", parent, err)
	}
	ns := pidNamespace()
	cleanStaleCgroups(parent, ns)
	var rnd [4]byte
	rand.Read(rnd[:])
	base := filepath.Join(parent, fmt.Sprintf("handoff-%d-%d-%s", ns, os.Getpid(), hex.EncodeToString(rnd[:])))
	if err := os.Mkdir(base, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if _, err := os.Stat(filepath.Join(base, "cgroup.kill")); err != nil {
		os.Remove(base)
		return nil, errors.New("the kernel lacks cgroup.kill (Linux 5.14)")
	}
	return &cgroups{base: base}, nil
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted.
func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) >= 5 {
			return f[4], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy is mounted")
}

// ownCgroup is this process's cgroup v2 path ("0::/path").
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("own cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("own cgroup: not in a cgroup v2 hierarchy")
}

func pidNamespace() uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/pid", &st) != nil {
		return 0
	}
	return st.Ino
}

// cleanStaleCgroups kills what a master that died without cleaning up
// (SIGKILL) left in its worker cgroups, and removes them. Only masters of
// this pid namespace whose pid is gone count as dead.
func cleanStaleCgroups(parent string, ns uint64) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	prefix := fmt.Sprintf("handoff-%d-", ns)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !e.IsDir() || !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() || !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		kids, _ := os.ReadDir(dir)
		for _, k := range kids {
			if k.IsDir() {
				w := &workerCgroup{dir: filepath.Join(dir, k.Name()), fd: -1}
				w.signal(unix.SIGKILL)
				waitUnpopulated(w, time.Second)
				os.Remove(w.dir)
			}
		}
		os.Remove(dir)
	}
}

func waitUnpopulated(w *workerCgroup, d time.Duration) {
	deadline := time.Now().Add(d)
	for w.populated() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// create makes the cgroup for one worker.
func (c *cgroups) create(name string) (*workerCgroup, error) {
	dir := filepath.Join(c.base, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create worker cgroup: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("open worker cgroup: %w", err)
	}
	return &workerCgroup{dir: dir, fd: fd}, nil
}

// close removes the master's cgroup directory, which is empty by then.
func (c *cgroups) close() {
	if c != nil {
		os.Remove(c.base)
	}
}

// workerCgroup is one worker's cgroup.
type workerCgroup struct {
	dir string
	fd  int // for clone3's CLONE_INTO_CGROUP; -1 once closed
}

// signal sends sig to every process in the cgroup; SIGKILL goes through
// cgroup.kill, which the kernel applies to all of them at once.
func (w *workerCgroup) signal(sig syscall.Signal) error {
	if sig == unix.SIGKILL {
		if err := os.WriteFile(filepath.Join(w.dir, "cgroup.kill"), []byte("1"), 0); err != nil {
			return fmt.Errorf("kill cgroup: %w", err)
		}
		return nil
	}
	b, err := os.ReadFile(filepath.Join(w.dir, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("list cgroup: %w", err)
	}
	var first error
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) && first == nil {
			first = err
		}
	}
	return first
}

// populated reports whether any process is left in the cgroup.
func (w *workerCgroup) populated() bool {
	b, err := os.ReadFile(filepath.Join(w.dir, "cgroup.events"))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("populated 1"))
}

// remove closes the cgroup's descriptor and removes it (once empty).
func (w *workerCgroup) remove() {
	if w == nil {
		return
	}
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
	os.Remove(w.dir)
}
