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
