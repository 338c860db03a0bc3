package workers

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"
)

// treeUsage sums the resident memory (bytes) and CPU time (seconds) of
// the processes of a worker's tree. Processes that end meanwhile are
// skipped.
func treeUsage(p process) (rss int64, cpu float64) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, 0
	}
	for _, pid := range p.pids() {
		pr, err := fs.Proc(pid)
		if err != nil {
			continue
		}
		st, err := pr.Stat()
		if err != nil {
			continue
		}
		rss += int64(st.ResidentMemory())
		cpu += st.CPUTime()
	}
	return rss, cpu
}

// pids lists the tree's processes: its cgroup's, else the main process
// and its descendants (a helper that was orphaned leaves that list; the
// process group still signals it).
func (p *proc) pids() []int {
	if p.cg != nil {
		b, err := os.ReadFile(filepath.Join(p.cg.dir, "cgroup.procs"))
		if err != nil {
			return nil
		}
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		return out
	}
	return descendants(p.id)
}

// descendants returns pid and every process below it, from the kernel's
// per-thread children lists.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && len(out) < 4096; i++ {
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(out[i]) + "/task")
		if err != nil {
			continue
		}
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(out[i]) + "/task/" + t.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// owns reports whether pid belongs to the worker's tree (see process).
func (p *proc) owns(pid int) bool {
	if pid == p.id {
		return true
	}
	if p.cg != nil {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			return os.IsNotExist(err) // gone: cannot be told
		}
		want := "/" + filepath.Base(filepath.Dir(p.cg.dir)) + "/" + filepath.Base(p.cg.dir)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.HasSuffix(line, want) {
				return true
			}
		}
		return false
	}
	for i := 0; i < 64 && pid > 1; i++ {
		ppid, pgrp, err := procStat(pid)
		if err != nil {
			return i == 0 && os.IsNotExist(err)
		}
		if pgrp == p.id || ppid == p.id {
			return true
		}
		pid = ppid
	}
	return false
}
