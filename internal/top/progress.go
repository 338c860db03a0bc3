package top

import (
	"fmt"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// Step is where a reload is, as one status shows it.
type Step struct {
	// Generation is the generation the reload rolls out.
	Generation int `json:"generation"`
	// Phase is the rollover's phase ("starting", "probation",
	// "retiring", "rolling back", "upgrading master").
	Phase workers.RolloverPhase `json:"phase"`
	// Ready is how many of the new generation's Workers are ready
	// (Workers is zero while the master has yet to say, and for a
	// master upgrade).
	Ready   int `json:"ready"`
	Workers int `json:"workers,omitempty"`
	// ProbationLeft, in probation, is the time until the new workers
	// have served the minimum uptime.
	ProbationLeft time.Duration `json:"-"`
	// Retired is how many of the Old workers that served when the
	// reload was first seen are gone.
	Retired int `json:"retired"`
	Old     int `json:"old"`
}

// Progress follows one reload over consecutive statuses: it remembers
// how many old workers there were when it first saw the rollover.
type Progress struct {
	gen int // the rollover being followed
	old int // old workers when it was first seen
}

// Step reads where the reload is from st, at now; ok is false when no
// reload is under way.
func (p *Progress) Step(st workers.Status, now time.Time) (s Step, ok bool) {
	r := st.Rollover
	if r == nil {
		return Step{}, false
	}
	oldLive := 0
	for _, w := range st.Workers {
		if w.Generation == r.Generation {
			if w.State == workers.Ready {
				s.Ready++
			}
		} else if w.State != workers.Gone && w.State != workers.Exited {
			oldLive++
		}
	}
	if p.gen != r.Generation {
		p.gen, p.old = r.Generation, oldLive
	}
	if oldLive > p.old {
		p.old = oldLive
	}
	s.Generation, s.Phase, s.Workers = r.Generation, r.Phase, r.Workers
	s.Old, s.Retired = p.old, p.old-oldLive
	if r.Phase == workers.RollProbation && !r.ProbationEnds.IsZero() {
		s.ProbationLeft = max(r.ProbationEnds.Sub(now), 0)
	}
	return s, true
}

// String is the step in a few words: "starting 3/4 ready", "probation
// 0.4 s left", "retiring 2/4".
func (s Step) String() string {
	switch s.Phase {
	case workers.RollStarting:
		if s.Workers == 0 {
			return fmt.Sprintf("starting, %d ready", s.Ready)
		}
		return fmt.Sprintf("starting %d/%d ready", s.Ready, s.Workers)
	case workers.RollProbation:
		return fmt.Sprintf("probation %.1f s left", s.ProbationLeft.Seconds())
	case workers.RollRetiring:
		return fmt.Sprintf("retiring %d/%d", s.Retired, s.Old)
	}
	return string(s.Phase)
}
