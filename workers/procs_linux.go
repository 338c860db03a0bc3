package workers

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// procs is the starter of real processes: it forks every worker and reaps
// every child.
//
// Forking happens on one goroutine locked to its OS thread for the life of
// the master: Linux delivers Pdeathsig when the thread that forked a child
// exits, and the Go runtime may otherwise retire that thread under a
// healthy worker.
//
// Reaping is linear in the number of children. Each child's pidfd is
// registered with the runtime's poller, which wakes exactly the goroutine
// waiting for that child when it exits; only then is it reaped, by pid.
// Children started elsewhere (tableflip's new master) keep their exit
// statuses. As pid 1 in a container the master must reap orphans too:
// then one loop, woken by SIGCHLD, reaps any child with wait4(-1), and
// passes the ones it did not start to the orphans callback.
//
// A worker's tree is its cgroup where the master can make cgroups (see
// cgroup_linux.go), else its process group: every worker leads a group of
// its own, and signals for the tree go to the group.
type procs struct {
	log  hclog.Logger
	reqs chan spawnReq
	done chan struct{}
	wg   sync.WaitGroup
	shim *shim
	cg   *cgroups // nil: trees are process groups

	// reapAll is set as pid 1: one loop reaps every child.
	reapAll  bool
	mu       sync.Mutex
	children map[int]*proc // reapAll only
	orphans  func(pid int, e exitInfo)
}

func newProcs(log hclog.Logger, orphans func(pid int, e exitInfo)) *procs {
	p := &procs{
		log:      log,
		reqs:     make(chan spawnReq),
		done:     make(chan struct{}),
		children: make(map[int]*proc),
		orphans:  orphans,
		reapAll:  orphans != nil,
	}
	var err error
	if p.shim, err = newShim(); err != nil {
		log.Debug("exec shim: using handoff's own binary", "reason", err)
	}
	if p.cg, err = openCgroups(); err != nil {
		log.Info("worker trees are process groups: no cgroup for workers", "reason", err)
	} else {
		log.Debug("each worker runs in its own cgroup", "under", p.cg.base)
	}
	p.wg.Add(1)
	go p.forkLoop()
	if p.reapAll {
		sigc := make(chan os.Signal, 1)
		signal.Notify(sigc, syscall.SIGCHLD)
		p.wg.Add(1)
		go p.reapLoop(sigc)
	}
	return p
}

// close stops the fork thread and the reaper. Call it only once every
// worker has been reaped: ending the fork thread delivers Pdeathsig to
// any child still alive.
func (p *procs) close() {
	close(p.done)
	p.wg.Wait()
	p.shim.close()
	p.cg.close()
}

// spawnReq asks the fork thread to start a process.
type spawnReq struct {
	spec procSpec
	resp chan spawnResp
}

type spawnResp struct {
	proc *proc
	err  error
}

func (p *procs) start(spec procSpec) (process, error) {
	req := spawnReq{spec: spec, resp: make(chan spawnResp, 1)}
	select {
	case p.reqs <- req:
	case <-p.done:
		return nil, errors.New("master is shutting down")
	}
	r := <-req.resp
	if r.err != nil {
		return nil, r.err
	}
	return r.proc, nil
}

func (p *procs) forkLoop() {
	defer p.wg.Done()
	runtime.LockOSThread()
	// Never unlocked: when this goroutine returns, its thread exits,
	// which is only safe once no worker is left.
	for {
		select {
		case req := <-p.reqs:
			pr, err := p.fork(req.spec)
			req.resp <- spawnResp{pr, err}
		case <-p.done:
			return
		}
	}
}

// fork starts one worker. With listenPID it goes through the exec shim,
// which sets LISTEN_PID to its own pid and then executes the command,
// keeping the pid.
func (p *procs) fork(spec procSpec) (*proc, error) {
	path, argv, env := spec.path, spec.argv, spec.env
	if spec.listenPID {
		path, argv, env = p.shim.wrap(spec.path, spec.argv, spec.env)
	}
	files := make([]uintptr, len(spec.files))
	for i, fd := range spec.files {
		files[i] = uintptr(fd)
	}
	pidfd := -1
	sys := &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
		PidFD:     &pidfd,
	}
	if u := spec.user; u != nil {
		sys.Credential = &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
	}
	var cg *workerCgroup
	if p.cg != nil {
		var err error
		if cg, err = p.cg.create(spec.name); err != nil {
			return nil, err
		}
		sys.UseCgroupFD, sys.CgroupFD = true, cg.fd
	}
	attr := &syscall.ProcAttr{Env: env, Files: files, Sys: sys}
	// Register the child before the reaper can see it exit.
	p.mu.Lock()
	defer p.mu.Unlock()
	pid, _, err := syscall.StartProcess(path, argv, attr)
	if err != nil && p.shim.failed(path, err) {
		p.log.Warn("exec shim refused by the kernel; using handoff's own binary from now on", "error", err)
		path, argv, env = p.shim.wrap(spec.path, spec.argv, spec.env)
		attr.Env = env
		pid, _, err = syscall.StartProcess(path, argv, attr)
	}
	if err != nil {
		cg.remove()
		return nil, fmt.Errorf("start %s: %w", spec.argv[0], err)
	}
	pr := &proc{id: pid, cg: cg, exit: make(chan exitInfo, 1), pidfd: -1}
	if pidfd >= 0 {
		pr.pidfd = pidfd
		if err := unix.SetNonblock(pidfd, true); err == nil {
			pr.pidf = os.NewFile(uintptr(pidfd), "pidfd")
		}
	}
	if p.reapAll {
		p.children[pid] = pr
	} else {
		go pr.wait()
	}
	return pr, nil
}

// proc is a started worker process. Signals for its main process go
// through its pidfd, so a signal can never reach an unrelated process
// that reused the pid.
type proc struct {
	id    int
	pidfd int      // -1 without pidfd support
	pidf  *os.File // pidfd in the runtime's poller, if it could be
	cg    *workerCgroup
	exit  chan exitInfo // receives once, when the process is reaped
}

func (p *proc) pid() int                { return p.id }
func (p *proc) exited() <-chan exitInfo { return p.exit }

// wait reaps the process once its pidfd says it has exited: the poller
// wakes this goroutine alone. Without a pollable pidfd it falls back to
// a blocking wait4, which holds a thread.
func (p *proc) wait() {
	var ws unix.WaitStatus
	reap := func() bool {
		got, err := unix.Wait4(p.id, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(p.id, &ws, unix.WNOHANG, nil)
		}
		return got == p.id || err != nil
	}
	if p.pidf != nil {
		if rc, err := p.pidf.SyscallConn(); err == nil && rc.Read(func(uintptr) bool { return reap() }) == nil {
			p.exit <- exitInfo{ws}
			return
		}
	}
	for {
		got, err := unix.Wait4(p.id, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if got == p.id || err != nil {
			break
		}
	}
	p.exit <- exitInfo{ws}
}

// signalMain signals the main process only.
func (p *proc) signalMain(sig syscall.Signal) error {
	var err error
	switch {
	case p.pidf != nil:
		rc, rerr := p.pidf.SyscallConn()
		if rerr != nil {
			return rerr
		}
		if cerr := rc.Control(func(fd uintptr) { err = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); cerr != nil {
			return cerr
		}
	case p.pidfd >= 0:
		err = unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	default:
		err = unix.Kill(p.id, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// signal signals the whole tree: its cgroup, else its process group (the
// main process leads it, and while it lives or is unreaped the group id
// cannot be reused). A main process that moved to another group still
// gets the signal, once.
func (p *proc) signal(sig syscall.Signal) error {
	if p.cg != nil {
		return p.cg.signal(sig)
	}
	var err error
	if pg, gerr := unix.Getpgid(p.id); gerr == nil && pg != p.id {
		err = p.signalMain(sig)
	}
	if kerr := unix.Kill(-p.id, sig); kerr != nil && !errors.Is(kerr, unix.ESRCH) && err == nil {
		err = kerr
	}
	return err
}

func (p *proc) treeEmpty() bool {
	if p.cg != nil {
		return !p.cg.populated()
	}
	return errors.Is(unix.Kill(-p.id, 0), unix.ESRCH)
}

func (p *proc) release() {
	if p.pidf != nil {
		p.pidf.Close()
		p.pidf = nil
	} else if p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
	p.pidfd = -1
	p.cg.remove()
}

func (p *procs) reapLoop(sigc chan os.Signal) {
	defer p.wg.Done()
	defer signal.Stop(sigc)
	for {
		p.reapAny()
		select {
		case <-sigc:
		case <-p.done:
			return
		}
	}
}

// reapAny reaps every exited child, ours or an orphan's: as pid 1 the
// master inherits every orphan in its container.
func (p *procs) reapAny() {
	for {
		var ws unix.WaitStatus
		p.mu.Lock()
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			p.mu.Unlock()
			continue
		}
		if err != nil || pid <= 0 {
			p.mu.Unlock()
			return
		}
		pr := p.children[pid]
		delete(p.children, pid)
		p.mu.Unlock()
		if pr == nil {
			p.orphans(pid, exitInfo{status: ws})
			continue
		}
		pr.exit <- exitInfo{status: ws}
	}
}
