package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// markerEnv is set in the environment of every process the bench starts,
// with a value unique to this run. Children inherit it (handoff, Node's
// cluster and PM2 all pass their environment on), so the final sweep finds
// every process of the run, even one that escaped its process group.
const markerEnv = "HANDOFF_BENCH_RUN"

// registry keeps every process the bench started, so that all of them are
// stopped on the way out, on failure too.
type registry struct {
	marker string
	logDir string

	mu    sync.Mutex
	procs []*process
	// daemons are processes the bench's children started outside its
	// process tree whose environment may not show the marker (PM2's
	// daemon rewrites it with its process title), by pid, with a word
	// their command line must contain to still be theirs.
	daemons map[int]string
}

// addDaemon records a daemon a child started, so that the final sweep and
// the CPU accounting know it is the bench's.
func (r *registry) addDaemon(pid int, cmdlineWord string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.daemons == nil {
		r.daemons = map[int]string{}
	}
	r.daemons[pid] = cmdlineWord
}

// own returns the processes that are the bench's: those with the run's
// marker, the recorded daemons, and everything below them.
func (r *registry) own() map[int]bool {
	want := []byte(markerEnv + "=" + r.marker + "\x00")
	r.mu.Lock()
	daemons := make(map[int]string, len(r.daemons))
	for p, w := range r.daemons {
		daemons[p] = w
	}
	r.mu.Unlock()
	parent := map[int]int{}
	own := map[int]bool{}
	for _, pid := range allPIDs() {
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			continue
		}
		parent[pid], _ = strconv.Atoi(f[1])
		if w, ok := daemons[pid]; ok {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmd, []byte(w)) {
				own[pid] = true
				continue
			}
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err == nil && bytes.Contains(env, want) {
			own[pid] = true
		}
	}
	for pid := range parent {
		for p, n := parent[pid], 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if own[p] {
				own[pid] = true
				break
			}
		}
	}
	return own
}

func newRegistry(logDir string) *registry {
	return &registry{
		marker: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()),
		logDir: logDir,
	}
}

// process is one started command, in its own process group.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once reaped
	err     error         // Wait's result, valid after done

	lines *lineWatcher // stdout+stderr, line by line
}

// start runs argv in its own process group with the run's marker in its
// environment, logging its output to the log directory.
func (r *registry) start(name string, argv []string, env []string) (*process, error) {
	if len(argv) == 0 {
		return nil, errors.New("start: empty command")
	}
	logPath := filepath.Join(r.logDir, sanitize(name)+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	lw := newLineWatcher()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = r.environ(env)
	w := io.MultiWriter(f, lw)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), lines: lw}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		lw.close()
		close(p.done)
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p, nil
}

// environ is the bench's environment without what would tie a child to
// the bench's own service manager or sockets, plus env and the marker.
func (r *registry) environ(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", strings.HasPrefix(k, "LISTEN_"), k == "PM2_HOME", k == markerEnv:
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, env...), markerEnv+"="+r.marker)
}

// run runs argv to completion (bounded by ctx) and returns its combined
// output.
func (r *registry) run(ctx context.Context, argv []string, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = r.environ(env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, lastLines(out, 5))
	}
	return out, nil
}

// pid is the process's pid.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process (not its group).
func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s: already exited", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// stop sends sig and waits up to grace for the process to exit, then
// kills its whole process group. It returns once the process is reaped.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	// Whatever is left of the group goes, exited leader or not.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// tail returns the last lines of the process's log, for error messages.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return lastLines(b, n)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup stops every process the bench started: each one's group gets
// SIGTERM, then SIGKILL after grace; then any process still carrying the
// run's marker (a daemon that left its group) is killed.
func (r *registry) cleanup(grace time.Duration) {
	r.mu.Lock()
	procs := append([]*process(nil), r.procs...)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !p.exited() {
				_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
			}
			p.stop(syscall.SIGTERM, grace)
		}()
	}
	wg.Wait()
	r.sweep()
}

// sweep kills every process of the bench's still running (see own), in
// a few passes (a parent killed in one pass forks nothing more), and
// describes the ones it killed.
func (r *registry) sweep() []string {
	var killed []string
	for pass := 0; pass < 5; pass++ {
		found := 0
		for pid := range r.own() {
			if pid == os.Getpid() {
				continue
			}
			if st, _ := procState(pid); st == "Z" || st == "" {
				continue
			}
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))))
			found++
		}
		if found == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return killed
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}

// lineWatcher splits what a process writes into lines and lets callers
// wait for a line that matches.
type lineWatcher struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	seen    int           // lines seen since the start, never trimmed
	changed chan struct{} // closed and replaced on every new line
	closed  bool
}

func newLineWatcher() *lineWatcher {
	return &lineWatcher{changed: make(chan struct{})}
}

func (l *lineWatcher) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, b...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		l.seen++
		added = true
	}
	if len(l.lines) > 10000 { // keep memory bounded
		l.lines = append([]string(nil), l.lines[len(l.lines)-5000:]...)
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(b), nil
}

func (l *lineWatcher) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
	}
}

// count returns how many lines have been seen so far (an offset for
// waitFor).
func (l *lineWatcher) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// total returns how many lines have been seen since the start; unlike
// count it is not reduced when old lines are trimmed.
func (l *lineWatcher) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

// waitFor waits until a line after the first `from` lines contains one of
// substrs, and returns that one.
func (l *lineWatcher) waitFor(ctx context.Context, from int, timeout time.Duration, substrs ...string) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		l.mu.Lock()
		if from > len(l.lines) {
			from = 0 // lines were trimmed; look at all that are left
		}
		for _, s := range l.lines[from:] {
			for _, sub := range substrs {
				if strings.Contains(s, sub) {
					l.mu.Unlock()
					return sub, nil
				}
			}
		}
		ch, closed := l.changed, l.closed
		l.mu.Unlock()
		if closed {
			return "", fmt.Errorf("output ended before %q", substrs)
		}
		select {
		case <-ch:
		case <-t.C:
			return "", fmt.Errorf("no %q within %s", substrs, timeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// --- /proc ---

// clkTck is USER_HZ, the unit of /proc/PID/stat times; 100 on every Linux
// ABI Go supports.
const clkTck = 100

// allPIDs lists the processes in /proc.
func allPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, is the first).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// procState is the one-letter state of pid (R, S, Z, …).
func procState(pid int) (string, error) {
	f, err := statFields(pid)
	if err != nil {
		return "", err
	}
	if len(f) < 1 {
		return "", fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return f[0], nil
}

// alive reports whether pid exists and has not exited (a zombie has).
func alive(pid int) bool {
	st, err := procState(pid)
	return err == nil && st != "Z" && st != "X"
}

// cpuTime is the user+system CPU time pid has used, its exited threads
// included (10 ms resolution).
func cpuTime(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// utime and stime are fields 14 and 15; f[0] is field 3.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: malformed times", pid)
	}
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// memInfo is what /proc/PID/status says about a process's size.
type memInfo struct {
	RSSKiB  int64
	Threads int
}

func procMem(pid int) (memInfo, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	defer f.Close()
	var m memInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		switch k {
		case "VmRSS":
			m.RSSKiB, _ = strconv.ParseInt(v, 10, 64)
		case "Threads":
			m.Threads, _ = strconv.Atoi(v)
		}
	}
	return m, sc.Err()
}

// descendants returns the live processes below pid, children first.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, p := range allPIDs() {
		f, err := statFields(p)
		if err != nil || len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 10000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// treeInfo sums a process tree: processes, threads and RSS.
type treeInfo struct {
	Procs   int
	Threads int
	RSSKiB  int64
}

func tree(pid int) treeInfo {
	var t treeInfo
	for _, p := range append([]int{pid}, descendants(pid)...) {
		m, err := procMem(p)
		if err != nil {
			continue
		}
		t.Procs++
		t.Threads += m.Threads
		t.RSSKiB += m.RSSKiB
	}
	return t
}

// cpuSnapshot is the CPU time, own and of reaped children, of every
// process that is not the bench's: neither the bench itself nor one that
// carries the run's marker, nor a kernel thread.
type cpuSnapshot map[int]time.Duration

// foreignCPU takes a cpuSnapshot.
func (r *registry) foreignCPU() cpuSnapshot {
	snap := cpuSnapshot{}
	own := r.own()
	for _, pid := range allPIDs() {
		if own[pid] || pid == os.Getpid() || pid == os.Getppid() {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 15 {
			continue
		}
		// Kernel threads (children of kthreadd, pid 2) do the network's
		// softirq work, much of it the bench's own traffic. A zombie
		// shows no command line or environment to tell whose it is, and
		// its time goes to its parent once it is reaped.
		if pid == 2 || f[1] == "2" || f[0] == "Z" {
			continue
		}
		fields := []int{11, 12, 13, 14} // utime stime cutime cstime
		if pid == 1 {
			// Init reaps orphans, daemons among them: their time is
			// not init's own.
			fields = fields[:2]
		}
		var ticks int64
		for _, i := range fields {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				continue
			}
			ticks += n
		}
		snap[pid] = time.Duration(ticks) * time.Second / clkTck
	}
	return snap
}

// since is the CPU time other processes used between old and s, and the
// names of those that used most of it.
func (s cpuSnapshot) since(old cpuSnapshot) (time.Duration, []string) {
	var total time.Duration
	byName := map[string]time.Duration{}
	for pid, t := range s {
		d := t
		if t0, ok := old[pid]; ok {
			d = max(t-t0, 0)
		}
		if d == 0 {
			continue
		}
		total += d
		name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			name = []byte("?")
		}
		byName[strings.TrimSpace(string(name))] += d
	}
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return byName[names[i]] > byName[names[j]] })
	if len(names) > 3 {
		names = names[:3]
	}
	return total, names
}
