package workers

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// GenPhase is where a generation is in its life. Every change goes
// through generation.transition, on the supervisor's goroutine.
type GenPhase string

// A generation moves starting → serving → retiring → gone (the first
// one), or probation → serving → retiring → gone (one a reload rolls
// out), or probation → retiring → gone (a reload that failed).
const (
	// GenStarting: the first generation, until every worker is ready. A
	// failing worker is restarted with backoff: there is nothing to roll
	// back to.
	GenStarting GenPhase = "starting"
	// GenProbation: rolled out by a reload while the previous generation
	// serves on. Any of its workers exiting fails the reload.
	GenProbation GenPhase = "probation"
	// GenServing: the generation serves; exited workers are replaced.
	GenServing GenPhase = "serving"
	// GenRetiring: being stopped; exited workers are not replaced.
	GenRetiring GenPhase = "retiring"
	// GenGone: no process of the generation is left.
	GenGone GenPhase = "gone"
)

// generation is one set of workers started from one resolution of the
// command: every worker of a generation runs the same binary.
type generation struct {
	num   int
	cfg   *Config  // the configuration it started with (a reload may bring another)
	env   []string // its workers' base environment
	path  string   // the command, resolved when the generation was made
	exe   int      // an O_PATH descriptor of that file (-1: none), which every worker of the generation runs
	argv  []string
	phase GenPhase
	slots []*slot
	log   hclog.Logger
	s     *Supervisor

	// Counts kept as workers come and go, so that no event costs a walk
	// over every slot: a reload stays linear in the number of workers.
	active  int // slots not retired
	ready   int // slots whose worker is ready
	workers int // workers whose tree is not gone
}

// genMoves are a generation's allowed transitions.
var genMoves = transitions[GenPhase]{
	GenStarting:  {GenServing, GenRetiring},
	GenProbation: {GenServing, GenRetiring},
	GenServing:   {GenRetiring},
	GenRetiring:  {GenGone},
}

// transition moves the generation to phase to and logs why.
func (g *generation) transition(to GenPhase, why string) {
	from := g.phase
	if from == to {
		return
	}
	if !genMoves.allows(from, to) {
		g.s.refuse("generation", from, to, why)
		return
	}
	g.phase = to
	g.log.Info("generation "+string(to), "was", string(from), "why", why)
	if to == GenGone {
		g.closeExe()
	}
}

// replaces reports whether an exited worker of g is replaced.
func (g *generation) replaces() bool {
	return g.phase == GenStarting || g.phase == GenServing
}

// allReady reports whether every slot that is not retired has a ready
// worker.
func (g *generation) allReady() bool { return g.ready == g.active }

// live reports whether any process of the generation is left.
func (g *generation) live() bool { return g.workers > 0 }

// ResolveCommand finds argv0 as it is on disk now (in PATH if it has no
// slash), following symlinks, so that each generation runs the binary that
// was there when it started. It fails if the file is missing or not
// executable.
func ResolveCommand(argv0 string) (string, error) {
	p, err := exec.LookPath(argv0)
	if err != nil {
		var (
			ee *exec.Error
			pe *fs.PathError
		)
		if errors.As(err, &pe) {
			err = pe.Err
		} else if errors.As(err, &ee) {
			err = ee.Err
		}
		return "", fmt.Errorf("command %q: %w", argv0, err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("command %q: %w", argv0, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	return abs, nil
}

// openExe opens a compiled (ELF) binary at path for its generation's
// workers to run by descriptor, so that a generation runs the same file
// for its whole life: restarts, scaling and recycling do not pick up what
// a deploy moved over the path since (and a rolled-back release stays
// rolled back). Scripts are run by path: their interpreter reads them, and
// the source files they import, by name anyway. -1 if the file is not ELF
// or cannot be opened.
func openExe(path string) int {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	var magic [4]byte
	if n, err := unix.Pread(fd, magic[:], 0); err != nil || n != 4 || string(magic[:]) != "\x7fELF" {
		unix.Close(fd)
		return -1
	}
	return fd
}

// closeExe releases the generation's binary.
func (g *generation) closeExe() {
	if g.exe >= 0 {
		unix.Close(g.exe)
		g.exe = -1
	}
}
