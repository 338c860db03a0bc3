package workers

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitInfo is how a process ended.
type exitInfo struct {
	status unix.WaitStatus
}

func (e exitInfo) String() string {
	switch {
	case e.status.Exited():
		return fmt.Sprintf("exited with status %d", e.status.ExitStatus())
	case e.status.Signaled():
		return fmt.Sprintf("killed by %s", unix.SignalName(e.status.Signal()))
	}
	return fmt.Sprintf("ended (wait status %#x)", uint32(e.status))
}

// spawnReq asks the fork thread to start a process.
type spawnReq struct {
	path  string
	argv  []string
	env   []string
	files []uintptr
	resp  chan spawnResp
}

type spawnResp struct {
	proc *proc
	err  error
}

// proc is a started child process. Signals go through its pidfd, so a
// signal can never reach an unrelated process that reused the pid.
type proc struct {
	pid   int
	pidfd int
	exit  chan exitInfo // receives once, when the process is reaped
}

func (p *proc) signal(sig syscall.Signal) error {
	if p.pidfd >= 0 {
		err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
		if errors.Is(err, unix.ENOSYS) {
			return unix.Kill(p.pid, sig)
		}
		return err
	}
	return unix.Kill(p.pid, sig)
}

func (p *proc) release() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// procs forks every worker and reaps every child.
//
// Forking happens on one goroutine locked to its OS thread for the life of
// the master: Linux delivers Pdeathsig when the thread that forked a child
// exits, and the Go runtime may otherwise retire that thread under a
// healthy worker.
//
// Reaping is one loop woken by SIGCHLD. Normally it waits only for the
// pids it started, so children started elsewhere (tableflip's new master)
// keep their exit statuses. As pid 1 in a container the master must reap
// orphans too: then it waits for any child, and passes the ones it did not
// start to the orphans callback.
type procs struct {
	reqs chan spawnReq
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	children map[int]*proc
	orphans  func(pid int, e exitInfo)
}

func newProcs(orphans func(pid int, e exitInfo)) *procs {
	p := &procs{
		reqs:     make(chan spawnReq),
		done:     make(chan struct{}),
		children: make(map[int]*proc),
		orphans:  orphans,
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGCHLD)
	p.wg.Add(2)
	go p.forkLoop()
	go p.reapLoop(sigc)
	return p
}

// close stops both loops. Call it only once every worker has been reaped:
// ending the fork thread delivers Pdeathsig to any child still alive.
func (p *procs) close() {
	close(p.done)
	p.wg.Wait()
}

func (p *procs) start(path string, argv, env []string, files []uintptr) (*proc, error) {
	req := spawnReq{path: path, argv: argv, env: env, files: files, resp: make(chan spawnResp, 1)}
	select {
	case p.reqs <- req:
	case <-p.done:
		return nil, errors.New("master is shutting down")
	}
	r := <-req.resp
	return r.proc, r.err
}

func (p *procs) forkLoop() {
	defer p.wg.Done()
	runtime.LockOSThread()
	// Never unlocked: when this goroutine returns, its thread exits,
	// which is only safe once no worker is left.
	for {
		select {
		case req := <-p.reqs:
			req.resp <- p.fork(req)
		case <-p.done:
			return
		}
	}
}

func (p *procs) fork(req spawnReq) spawnResp {
	pidfd := -1
	attr := &syscall.ProcAttr{
		Env:   req.env,
		Files: req.files,
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pidfd,
		},
	}
	// Register the child before the reaper can see it exit.
	p.mu.Lock()
	defer p.mu.Unlock()
	pid, _, err := syscall.StartProcess(req.path, req.argv, attr)
	if err != nil {
		return spawnResp{err: fmt.Errorf("start %s: %w", req.argv[0], err)}
	}
	pr := &proc{pid: pid, pidfd: pidfd, exit: make(chan exitInfo, 1)}
	p.children[pid] = pr
	return spawnResp{proc: pr}
}

func (p *procs) reapLoop(sigc chan os.Signal) {
	defer p.wg.Done()
	defer signal.Stop(sigc)
	for {
		p.reap()
		select {
		case <-sigc:
		case <-p.done:
			return
		}
	}
}

func (p *procs) reap() {
	if p.orphans != nil {
		p.reapAny()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, pr := range p.children {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if err != nil || got != pid {
			continue
		}
		delete(p.children, pid)
		pr.exit <- exitInfo{status: ws}
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
