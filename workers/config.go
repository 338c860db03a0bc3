package workers

import (
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/upgrade"
)

// Strategy is how a reload replaces workers.
type Strategy string

const (
	// Surge starts every new worker at once and retires the old ones
	// after all new ones are ready: at most 2N workers run.
	Surge Strategy = "surge"
	// Rolling replaces one worker at a time: at most N+1 workers run.
	Rolling Strategy = "rolling"
)

// Config is what a Supervisor runs.
type Config struct {
	// Command is the worker's argv. Command[0] is looked up in PATH and
	// resolved again for every generation.
	Command []string
	// Workers is the number of workers per generation.
	Workers int
	// Listeners are passed to every worker as fds 3, 4, … in order.
	Listeners []*upgrade.Listener
	// ReadyDelay, if set, marks a worker ready once it has been alive that
	// long. READY=1 on its notify socket always marks it ready.
	ReadyDelay time.Duration
	// ReadyTimeout is how long a worker may take to become ready.
	ReadyTimeout time.Duration
	// DrainTimeout is how long a worker may take to exit after the stop
	// signal before it is killed.
	DrainTimeout time.Duration
	// StopSignal asks a worker to drain and exit.
	StopSignal syscall.Signal
	// Strategy is how reloads replace workers.
	Strategy Strategy
	// RuntimeDir is a private (0700) directory for the workers' notify
	// sockets. If empty, a temporary one is made and removed on exit.
	RuntimeDir string
	// Environ is the base environment of every worker, before the
	// variables handoff sets. If nil, the master's own, cleaned.
	Environ []string
	// FirstGeneration is the number of the first generation (a new
	// master continues its predecessor's numbering). Zero means 1.
	FirstGeneration int
	// ReapOrphans makes the master reap every child, as pid 1 must.
	ReapOrphans bool
	// OnEvent, if set, is called on lifecycle events, one call at a time.
	OnEvent func(Event)
	// Logger receives the supervisor's logs.
	Logger hclog.Logger
}
