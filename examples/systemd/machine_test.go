//go:build linux

package systemd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/workers"
)

// This file boots systemd as pid 1 of a private namespace (README.md,
// "Booting systemd in a namespace", lists the steps) and drives it from
// the host.

const (
	// testTarget is what systemd boots into: journald only. The test
	// starts the units under test itself.
	testTarget = "handoff-test.target"
	targetUnit = "[Unit]\nDescription=handoff systemd test\nDefaultDependencies=no\nWants=systemd-journald.service\n"
	// testDropIn keeps the host's sysinit units (tmpfiles cleaning /tmp,
	// and others) from being pulled in by the units under test.
	testDropIn = "[Unit]\nDefaultDependencies=no\n"

	cgroupPrefix = "handoff-systemd-test-"
	// sigPoweroff is SIGRTMIN+4 (glibc's SIGRTMIN is 34): systemd powers
	// off on it.
	sigPoweroff = syscall.Signal(38)
)

// bootScript runs as pid 1 of the new pid namespace, in a new mount
// namespace with private propagation, and ends by exec'ing systemd.
const bootScript = `set -eu
units=$1 bin=$2 opt=$3 systemd=$4 target=$5
umount -R /sys/fs/cgroup 2>/dev/null || umount -l /sys/fs/cgroup
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir /run/lock
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
# A /dev of its own: with the host's, journald's socket unit replaces the
# host's /dev/log and systemd writes to the host's console.
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/shm /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
# The units, and the binaries where the units expect them.
mount --bind "$units" /etc/systemd/system
mount --bind "$bin" /usr/local/bin
mount --bind "$opt" /opt
# Last, as they hide the test's directory: systemd makes the units'
# PrivateTmp= directories in these, and leaves them behind.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
# Debug logging: systemd then logs every notify message it gets.
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin container=unshare \
	"$systemd" --unit="$target" --log-target=journal --log-level=debug
`

// launcher moves itself into the machine's cgroup, which becomes the root
// of the new cgroup namespace, then execs unshare.
const launcher = `echo $$ > "$1/cgroup.procs" || exit 97
shift
exec "$@"`

// host is what the machine needs from the host, found by checkHost.
type host struct {
	systemd string // the systemd binary
	version int    // its version number
	cgroups string // the cgroup2 directory to make machines' cgroups in
}

// checkHost skips the test, saying why, unless this machine can boot
// systemd in a namespace.
func checkHost(t *testing.T) *host {
	t.Helper()
	if testing.Short() {
		t.Skip("boots systemd in a namespace: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it unshares namespaces, mounts and makes cgroups")
	}
	for _, tool := range []string{"sh", "unshare", "nsenter", "mount", "umount", "mknod", "env", "systemctl", "journalctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on this machine: %v", tool, err)
		}
	}
	for _, dir := range []string{"/usr/local/bin", "/opt", "/etc/systemd/system"} {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Skipf("no directory %s to mount the test's files over", dir)
		}
	}
	h := &host{}
	for _, p := range []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"} {
		if _, err := os.Stat(p); err == nil {
			h.systemd = p
			break
		}
	}
	if h.systemd == "" {
		t.Skip("no systemd binary at /usr/lib/systemd/systemd or /lib/systemd/systemd")
	}
	out, err := exec.Command(h.systemd, "--version").Output()
	if err != nil {
		t.Skipf("%s --version: %v", h.systemd, err)
	}
	m := regexp.MustCompile(`^systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Skipf("%s --version: cannot read a version in %q", h.systemd, firstLine(string(out)))
	}
	h.version, _ = strconv.Atoi(string(m[1]))
	if h.version < 252 {
		t.Skipf("systemd %d is older than 252, the oldest this test knows", h.version)
	}
	h.cgroups, err = cgroupParent()
	if err != nil {
		t.Skipf("cgroup2: %v", err)
	}
	sweep(h.cgroups, cgroupPrefix, func(d string) error { return removeCgroup(d, time.Second) })
	probe := filepath.Join(h.cgroups, fmt.Sprintf("%s%d-probe", cgroupPrefix, os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil {
		t.Skipf("cgroup2 at %s is not writable: %v", h.cgroups, err)
	}
	out, err = exec.Command("sh", "-c", launcher, "launcher", probe, "true").CombinedOutput()
	if rerr := removeCgroup(probe, 5*time.Second); rerr != nil {
		t.Errorf("remove probe cgroup: %v", rerr)
	}
	if err != nil {
		t.Skipf("cannot move a process into cgroup %s: %v: %s", probe, err, strings.TrimSpace(string(out)))
	}
	return h
}

// cgroupParent returns the directory of this process's own cgroup in the
// cgroup2 hierarchy: /sys/fs/cgroup/unified on hybrid hosts, or
// /sys/fs/cgroup on unified ones.
func cgroupParent() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	own := ""
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			own = rest
		}
	}
	if own == "" {
		return "", errors.New("this process is in no cgroup2 cgroup")
	}
	for _, mnt := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return filepath.Join(mnt, own), nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

// sweep removes what earlier runs left in dir when they were killed before
// they could clean up (a go test timeout): the entries named
// prefix<pid>-…, of test processes that are gone, removed with remove.
func sweep(dir, prefix string, remove func(string) error) {
	paths, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	for _, p := range paths {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(p), prefix), "-")
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); errors.Is(err, os.ErrNotExist) {
			_ = remove(p)
		}
	}
}

// removeCgroup removes the cgroup directory dir and those below it,
// deepest first, retrying while they still hold processes that are dying.
func removeCgroup(dir string, timeout time.Duration) error {
	return poll(timeout, 50*time.Millisecond, nil, func() (bool, string) {
		var dirs []string
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if errors.Is(err, os.ErrNotExist) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				procs, _ := os.ReadFile(filepath.Join(dirs[i], "cgroup.procs"))
				return false, fmt.Sprintf("%v (processes: %q)", err, strings.Fields(string(procs)))
			}
		}
		return true, ""
	})
}

// machine is a systemd running as pid 1 of its own pid, mount, uts and
// cgroup namespaces, sharing the host's network.
type machine struct {
	t       *testing.T
	dir     string // its files on the host: units/, bin/, opt/, console.log
	cgroup  string
	cmd     *exec.Cmd // sh, then unshare
	exited  chan struct{}
	pid     int // host pid of systemd
	console string
	units   []string // the units under test
}

// boot starts a machine with the given unit files (names relative to
// /etc/systemd/system, e.g. "x.service.d/y.conf") and binaries (names
// relative to dir, e.g. "bin/handoff" for /usr/local/bin/handoff, mapped
// to the host file to copy there). It is powered off and everything it
// made removed when t ends.
func boot(t *testing.T, h *host, dir string, units map[string]string, files map[string]string) *machine {
	t.Helper()
	m := &machine{t: t, dir: dir, exited: make(chan struct{}), console: filepath.Join(dir, "console.log")}
	for name := range units {
		if !strings.Contains(name, "/") {
			m.units = append(m.units, name)
		}
	}
	units[testTarget] = targetUnit
	for name, text := range units {
		if err := writeFile(filepath.Join(dir, "units", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "opt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dst, src := range files {
		if err := m.install(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "boot.sh")
	if err := writeFile(script, []byte(bootScript), 0o644); err != nil {
		t.Fatal(err)
	}
	console, err := os.Create(m.console)
	if err != nil {
		t.Fatalf("console log: %v", err)
	}
	defer console.Close()

	m.cgroup = filepath.Join(h.cgroups, fmt.Sprintf("%s%d-%s", cgroupPrefix, os.Getpid(), filepath.Base(dir)))
	if err := os.Mkdir(m.cgroup, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := removeCgroup(m.cgroup, 10*time.Second); err != nil {
			t.Errorf("remove cgroup %s: %v", m.cgroup, err)
		}
	})

	m.cmd = exec.Command("sh", "-c", launcher, "launcher", m.cgroup,
		"unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--cgroup", "--mount-proc", "--propagation", "private",
		"sh", script, filepath.Join(dir, "units"), filepath.Join(dir, "bin"), filepath.Join(dir, "opt"), h.systemd, testTarget)
	m.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	m.cmd.Stdout, m.cmd.Stderr = console, console
	// Should this test process die, unshare dies, and with it (through
	// --kill-child) systemd and every process of its namespace.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	go func() {
		_ = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(m.powerOff)

	start := time.Now()
	if err := m.poll(10*time.Second, func() (bool, string) {
		m.pid = childNamed(m.cmd.Process.Pid, "systemd")
		return m.pid != 0, "no systemd process under unshare yet"
	}); err != nil {
		t.Fatalf("boot: %v\nconsole:\n%s", err, m.consoleLog())
	}
	t.Cleanup(m.dumpIfFailed)
	if err := m.poll(30*time.Second, func() (bool, string) {
		p, err := m.show(testTarget, "ActiveState")
		if err != nil {
			return false, err.Error()
		}
		return p["ActiveState"] == "active", "ActiveState=" + p["ActiveState"]
	}); err != nil {
		t.Fatalf("boot: %s never became active: %v", testTarget, err)
	}
	t.Logf("systemd booted in %s (host pid %d)", time.Since(start).Round(time.Millisecond), m.pid)
	return m
}

// powerOff stops systemd as a container manager would, kills what is
// left, and waits until unshare has exited. Mounts go with the mount
// namespace; the cgroup is removed by the cleanup registered before.
func (m *machine) powerOff() {
	if m.pid != 0 {
		_ = unix.Kill(m.pid, sigPoweroff)
	}
	select {
	case <-m.exited:
		return
	case <-time.After(30 * time.Second):
	}
	m.t.Errorf("systemd did not power off within 30s: killing it")
	if m.pid != 0 {
		_ = unix.Kill(m.pid, unix.SIGKILL)
	}
	_ = m.cmd.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.t.Errorf("unshare (pid %d) still running after SIGKILL", m.cmd.Process.Pid)
	}
}

func (m *machine) dumpIfFailed() {
	if !m.t.Failed() {
		return
	}
	args := []string{"journalctl", "--no-pager", "-o", "short-monotonic", "-n", "300"}
	for _, u := range m.units {
		args = append(args, "-u", u)
	}
	out, err := m.output(30*time.Second, args...)
	if err != nil {
		m.t.Logf("journal: %v", err)
	}
	m.t.Logf("journal of %s (last 300 lines):\n%s", strings.Join(m.units, ", "), out)
	m.t.Logf("console:\n%s", m.consoleLog())
}

func (m *machine) consoleLog() string {
	b, err := os.ReadFile(m.console)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// install copies the host file src into the machine's tree as dst, by
// writing a temporary file next to it and renaming it: the way to replace
// a binary that is running.
func (m *machine) install(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	path := filepath.Join(m.dir, dst)
	tmp := path + ".new"
	if err := writeFile(tmp, b, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// poll calls cond until it reports done, or fails after timeout with the
// last state cond described. It gives up early if systemd is gone.
func (m *machine) poll(timeout time.Duration, cond func() (bool, string)) error {
	return poll(timeout, 100*time.Millisecond, m.exited, cond)
}

// poll calls cond every interval until it reports done. After timeout, or
// once gone is closed, it returns an error that carries the last state
// cond described.
func poll(timeout, interval time.Duration, gone <-chan struct{}, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		done, state := cond()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %s", timeout, state)
		}
		select {
		case <-tick.C:
		case <-gone:
			return fmt.Errorf("systemd exited; last: %s", state)
		}
	}
}

// output runs a command inside the machine's namespaces and returns its
// standard output.
func (m *machine) output(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(m.pid), "-m", "-p", "-u", "-C", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// systemctl runs systemctl in the machine.
func (m *machine) systemctl(args ...string) error {
	_, err := m.output(90*time.Second, append([]string{"systemctl"}, args...)...)
	return err
}

// show returns unit properties, as systemctl show prints them.
func (m *machine) show(unit string, props ...string) (map[string]string, error) {
	args := []string{"systemctl", "show", unit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := m.output(10*time.Second, args...)
	if err != nil {
		return nil, err
	}
	p := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			p[k] = v
		}
	}
	return p, nil
}

// notification is one sd_notify datagram that systemd logged receiving.
type notification struct {
	PID    int
	Fields map[string]string
	Raw    string
}

var (
	notifyRE = regexp.MustCompile(`Got notification message from PID (\d+) \((.*)\)$`)
	fieldRE  = regexp.MustCompile(`(?:^|, )([A-Z][A-Z0-9_]*)=`)
)

// journal returns the messages logged by and about unit.
func (m *machine) journal(unit string) (string, error) {
	return m.output(20*time.Second, "journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

// notifications returns, in order, the notify messages systemd received
// for unit, as its debug log tells.
func (m *machine) notifications(unit string) ([]notification, error) {
	out, err := m.journal(unit)
	if err != nil {
		return nil, err
	}
	var ns []notification
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		sm := notifyRE.FindStringSubmatch(sc.Text())
		if sm == nil {
			continue
		}
		n := notification{Fields: map[string]string{}, Raw: sm[2]}
		n.PID, _ = strconv.Atoi(sm[1])
		locs := fieldRE.FindAllStringSubmatchIndex(sm[2], -1)
		for i, l := range locs {
			end := len(sm[2])
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			n.Fields[sm[2][l[2]:l[3]]] = sm[2][l[1]:end]
		}
		ns = append(ns, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return ns, nil
}

// hostPID returns the host pid of the process that is nsPID in the
// machine, or 0.
func (m *machine) hostPID(nsPID int) int {
	own, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", m.pid))
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != own {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(rest)
				if len(f) > 1 && f[len(f)-1] == strconv.Itoa(nsPID) {
					return pid
				}
			}
		}
	}
	return 0
}

// childNamed returns the pid of a child of parent whose command is name,
// or 0.
func childNamed(parent int, name string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(parent) && s[open+1:close] == name {
			return pid
		}
	}
	return 0
}

// listeningInodes returns the inodes of the TCP sockets listening on port.
func listeningInodes(port int) ([]string, error) {
	var inodes []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listening sockets: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
				inodes = append(inodes, f[9])
			}
		}
	}
	return inodes, nil
}

// holdsSocket tells whether host process pid has socket inode open.
func holdsSocket(pid int, inode string) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

// handoffStatus is what `handoff status --json` prints: the master's own
// type, so the JSON field names cannot drift apart.
type handoffStatus = workers.Status

// handoffStatus asks the unit's master for its status over the control
// socket in the unit's RuntimeDirectory=.
func (m *machine) handoffStatus(unit string) (handoffStatus, error) {
	var st handoffStatus
	p, err := m.show(unit, "RuntimeDirectory")
	if err != nil {
		return st, err
	}
	dirs := strings.Fields(p["RuntimeDirectory"])
	if len(dirs) == 0 {
		return st, fmt.Errorf("%s has no RuntimeDirectory=", unit)
	}
	out, err := m.output(20*time.Second, "/usr/local/bin/handoff", "status", "--json", "--control", "/run/"+dirs[0]+"/handoff.sock")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("handoff status --json: %w in %q", err, out)
	}
	return st, nil
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Chmod(path, mode)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
