package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Strategy is how a reload replaces workers.
type Strategy string

const (
	// Surge starts every new worker at once and retires the old ones
	// after all new ones have passed probation: at most 2N workers run.
	Surge Strategy = "surge"
	// Rolling replaces one worker at a time: at most N+1 workers run.
	Rolling Strategy = "rolling"
)

// MaxWorkers bounds Config.Workers. A worker costs the master a few
// descriptors and goroutines, and a reload runs twice as many; far beyond
// one per core it only exhausts the machine.
const MaxWorkers = 1024

// Defaults for the zero values of Config.
const (
	DefaultReadyTimeout = 60 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	DefaultMinUptime    = time.Second
)

// Config is what a Supervisor runs.
type Config struct {
	// Command is the worker's argv. Command[0] is looked up in PATH and
	// resolved again for every generation.
	Command []string
	// Workers is the number of workers per generation, 1 to MaxWorkers.
	Workers int
	// Listeners are passed to every worker as fds 3, 4, … in order.
	Listeners []Listener
	// ReadyDelay, if set, marks a worker ready once it has been alive that
	// long. READY=1 on its notify socket always marks it ready.
	ReadyDelay time.Duration
	// Probe, if set, makes the master probe each starting worker instead
	// of waiting for READY=1.
	Probe *Probe
	// ReadyTimeout is how long a worker may take to become ready.
	ReadyTimeout time.Duration
	// DrainTimeout is how long a worker may take to exit after the stop
	// signal before it is killed.
	DrainTimeout time.Duration
	// StartAttempts, if positive, makes Run give up (and return the
	// reason) once every slot of the first generation has failed to start
	// that many times in a row with no worker ever ready.
	StartAttempts int
	// HangTimeout is how long a ready worker steered away because its
	// accept queue did not move may go on not moving before it is
	// killed and replaced (liveness.go). Zero means DefaultHangTimeout;
	// negative: such a worker is steered away from, never replaced.
	HangTimeout time.Duration
	// Watchdog, if positive, is each worker's WATCHDOG_USEC: a ready
	// worker that sends no WATCHDOG=1 for that long is replaced.
	Watchdog time.Duration
	// Health, if set, checks every ready worker through its own socket.
	Health *Health
	// MinUptime is how long a worker must stay up after it became ready:
	// a new generation stays on probation until every new worker has,
	// and a worker that exits on its own sooner counts as failing. Zero
	// means DefaultMinUptime; negative means no probation at all.
	MinUptime time.Duration
	// RetireParallel is how many old workers are retired at once after a
	// reload (and after a master hand-over). Zero means one at a time.
	RetireParallel int
	// MaxMemory, if positive, is the resident memory (bytes) a worker's
	// whole process tree may keep using: above it for a few seconds, the
	// worker is replaced gracefully.
	MaxMemory int64
	// Output is what happens to workers' stdout and stderr; OutputTo and
	// OutputLock, where output goes in prefix and JSON modes, and the
	// lock the master's own logger takes around each line (zero:
	// inherit).
	Output     OutputMode
	OutputTo   io.Writer
	OutputLock sync.Locker
	// User, if set, is who workers run as (the master must be root).
	User *User
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
	// FirstBanks is, per slot, the bank of steered sockets the first
	// generation uses (missing slots use bank 0): a new master takes, in
	// each slot, the bank its predecessor's worker does not.
	FirstBanks []int
	// TakeOver says the master took over from an older one, whose
	// workers serve until this master's first generation is ready:
	// connections are steered to it all at once, not slot by slot.
	TakeOver bool
	// ReapOrphans makes the master reap every child, as pid 1 must.
	ReapOrphans bool
	// UpgradeMaster, if set, runs a master self-upgrade for a reload
	// asked with ReloadRequest.Master: it starts a new master, hands it
	// the sockets and returns once that master serves (nil) or failed.
	// On success this supervisor retires every worker and Run returns.
	UpgradeMaster func(ctx context.Context, h Handover) error
	// OnEvent, if set, is called on lifecycle events, one call at a time,
	// from the supervisor's own goroutine: it must not call back into
	// the Supervisor, and should be quick.
	OnEvent func(Event)
	// Logger receives the supervisor's logs.
	Logger hclog.Logger
}

// User is an account workers run as.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
	Home   string
}

// Handover is what a new master continues from.
type Handover struct {
	// LastGeneration is the highest generation number used so far.
	LastGeneration int
	// Banks is, per slot, the bank of steered sockets the serving
	// worker uses.
	Banks []int
}

// withDefaults checks c and fills in its zero values.
func (c Config) withDefaults() (Config, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return c, errors.New("no command to run")
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		return c, fmt.Errorf("workers must be between 1 and %d, not %d", MaxWorkers, c.Workers)
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	switch {
	case c.MinUptime == 0:
		c.MinUptime = DefaultMinUptime
	case c.MinUptime < 0:
		c.MinUptime = 0
	}
	if c.RetireParallel <= 0 {
		c.RetireParallel = 1
	}
	if c.StopSignal == 0 {
		c.StopSignal = syscall.SIGTERM
	}
	switch c.Strategy {
	case "":
		c.Strategy = Surge
	case Surge, Rolling:
	default:
		return c, fmt.Errorf("unknown reload strategy %q", c.Strategy)
	}
	switch c.Output {
	case "", OutputInherit:
		c.Output = OutputInherit
	case OutputPrefix, OutputJSON:
		if c.OutputTo == nil {
			c.OutputTo = os.Stderr
		}
		if c.OutputLock == nil {
			c.OutputLock = &sync.Mutex{}
		}
	default:
		return c, fmt.Errorf("unknown worker output %q", c.Output)
	}
	if p := c.Probe; p != nil {
		if p.Listener < 0 || p.Listener >= len(c.Listeners) {
			return c, errors.New("readiness probe: no listener to probe")
		}
		l := c.Listeners[p.Listener]
		if l.Group == nil || l.Network == "udp" || l.Network == "unix" {
			return c, fmt.Errorf("readiness probe: listener %s is not a steered TCP listener; probes reach one worker only through its own socket (--balance steer or sticky)", l.Name)
		}
	}
	if c.HangTimeout == 0 {
		c.HangTimeout = DefaultHangTimeout
	}
	if c.Watchdog < 0 {
		return c, fmt.Errorf("watchdog %s: must not be negative", c.Watchdog)
	}
	if h := c.Health; h != nil {
		if h.Listener < 0 || h.Listener >= len(c.Listeners) {
			return c, errors.New("health check: no listener to check")
		}
		l := c.Listeners[h.Listener]
		if l.Group == nil || l.Network == "udp" || l.Network == "unix" {
			return c, fmt.Errorf("health check: listener %s is not a steered TCP listener; checks reach one worker only through its own socket (--balance steer or sticky)", l.Name)
		}
		hc := *h
		if hc.Interval <= 0 {
			hc.Interval = DefaultHealthInterval
		}
		if hc.Failures <= 0 {
			hc.Failures = DefaultHealthFailures
		}
		c.Health = &hc
	}
	if c.FirstGeneration <= 0 {
		c.FirstGeneration = 1
	}
	for i, b := range c.FirstBanks {
		if b != 0 && b != 1 {
			return c, fmt.Errorf("slot %d: bank %d: want 0 or 1", i, b)
		}
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c, nil
}
