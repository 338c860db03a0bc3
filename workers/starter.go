package workers

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// starter starts worker processes. It is the supervisor's seam to the
// operating system: the real one forks (procs_linux.go); tests swap in
// processes simulated in-process, so that every supervision rule is
// exercised fast and exactly.
type starter interface {
	// start starts a worker process as spec says.
	start(spec procSpec) (process, error)
	// close releases the starter. Call it once every process it started
	// is gone.
	close()
}

// procSpec describes one worker process.
type procSpec struct {
	path string   // the command, resolved
	argv []string // its argv, argv[0] as the user gave it
	env  []string // its environment, without LISTEN_PID
	// files become the child's descriptors 0, 1, 2, 3, …
	files []int
	// listenPID asks for LISTEN_PID=<the child's pid> in its environment.
	listenPID bool
	// name is unique among the master's workers (e.g. for a cgroup).
	name string
	// user, if set, is who the process runs as.
	user *User
}

// process is one started worker: its main process, and every process
// that main process started (its tree).
type process interface {
	// pid is the main process's pid.
	pid() int
	// signal sends sig to every process of the tree, the main one
	// included while it lives. SIGKILL kills the whole tree.
	signal(sig syscall.Signal) error
	// exited receives once, when the main process has ended.
	exited() <-chan exitInfo
	// treeEmpty reports, after the main process ended, whether any
	// process of its tree is left.
	treeEmpty() bool
	// pids lists the processes of the tree (for memory and CPU).
	pids() []int
	// owns reports whether pid is a process of the tree: its cgroup's,
	// or its process group's or a descendant of its main process. A pid
	// that is gone already cannot be told, and counts as its own.
	owns(pid int) bool
	// release frees what the process holds. Call it last, once.
	release()
}

// exitInfo is how a process ended.
type exitInfo struct {
	status unix.WaitStatus
}

func exitedWith(code int) exitInfo { return exitInfo{unix.WaitStatus(code << 8)} }

func killedBy(sig syscall.Signal) exitInfo { return exitInfo{unix.WaitStatus(sig)} }

func (e exitInfo) String() string {
	switch {
	case e.status.Exited():
		return fmt.Sprintf("exited with status %d", e.status.ExitStatus())
	case e.status.Signaled():
		return fmt.Sprintf("killed by %s", unix.SignalName(e.status.Signal()))
	}
	return fmt.Sprintf("ended (wait status %#x)", uint32(e.status))
}

// killedFromOutside reports whether the process was killed by a signal
// that a program does not bring on itself by crashing: the OOM killer's
// and an operator's SIGKILL, or a termination request. A crash (SIGSEGV,
// SIGABRT, SIGBUS, …) or an exit status is the program's own doing.
func (e exitInfo) killedFromOutside() bool {
	if !e.status.Signaled() {
		return false
	}
	switch e.status.Signal() {
	case unix.SIGKILL, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2:
		return true
	}
	return false
}

// pollTree waits until the tree is empty or d has passed, checking every
// few milliseconds; it reports whether the tree is empty.
func pollTree(pr process, d time.Duration, stop <-chan struct{}) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !pr.treeEmpty() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return pr.treeEmpty()
		case <-stop:
			return pr.treeEmpty()
		}
	}
	return true
}
