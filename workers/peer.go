package workers

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// InWorkerTree reports whether the process pid belongs to a worker's
// process tree: a worker's main process, a descendant of one, a member of
// a worker's process group, or a process in a worker's cgroup. The
// control socket refuses such peers: workers may run as the master's
// user, and must not reload, scale or stop it.
func (s *Supervisor) InWorkerTree(pid int) bool {
	mains := map[int]bool{}
	c := make(chan struct{})
	if !s.post(func() {
		for _, g := range s.gens {
			for _, sl := range g.slots {
				for _, w := range append(sl.exiting[:len(sl.exiting):len(sl.exiting)], sl.cur, sl.next) {
					if w != nil {
						mains[w.proc.pid()] = true
					}
				}
			}
		}
		close(c)
	}) {
		return false
	}
	<-c
	if inWorkerCgroup(pid) {
		return true
	}
	// Up the parent chain (bounded: a chain longer than this is not a
	// process tree the master made).
	for i := 0; i < 64 && pid > 1; i++ {
		if mains[pid] {
			return true
		}
		ppid, pgrp, err := procStat(pid)
		if err != nil {
			return false
		}
		if mains[pgrp] {
			return true
		}
		pid = ppid
	}
	return false
}

// procStat reads a process's parent and process group from
// /proc/PID/stat.
func procStat(pid int) (ppid, pgrp int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: the fields
	// start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	if ppid, err = strconv.Atoi(f[1]); err == nil {
		pgrp, err = strconv.Atoi(f[2])
	}
	return ppid, pgrp, err
}

// inWorkerCgroup reports whether pid is in a cgroup this master made for
// its workers: cgroup_linux.go names them handoff-NS-MASTERPID-RANDOM.
func inWorkerCgroup(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, comp := range strings.Split(line, "/") {
			f := strings.Split(comp, "-")
			if len(f) == 4 && f[0] == "handoff" && f[2] == strconv.Itoa(os.Getpid()) {
				return true
			}
		}
	}
	return false
}
