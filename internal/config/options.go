package config

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// Key describes one setting of 'handoff run': its name in the config file
// and its command-line flag. The command itself (the file's command, or
// what follows "--") is not a Key.
type Key struct {
	// Name is the key in the config file: "ready_timeout".
	Name string
	// Flag is the command-line flag without its dashes: "ready-timeout".
	Flag string
	// Arg names the flag's value in help: "D".
	Arg string
	// Default is the value used when neither the file nor a flag sets
	// it, as text (shown in help); empty means unset.
	Default string
	// Usage is the flag's help text.
	Usage string
	// Choices, if any, are every valid value (for shell completion).
	Choices []string
	// Repeatable keys may be given several times on the command line.
	Repeatable bool
	// Restart keys keep their running value when a reload re-reads the
	// config file: a change applies when handoff restarts (a warning
	// says so). Set from the table in Keys, the one place that says
	// which keys they are.
	Restart bool

	// restart, for a restart-only key, is how a reload keeps its
	// running value.
	restart *keeper
}

// keeper is how a reload keeps a restart-only key's running value.
type keeper struct {
	text func(o *Options) string // the value as a warning shows it
	set  func(to, from *Options) // puts from's value in to
}

// keepField keeps the field field returns (a text shown quoted, or none).
func keepField[T any](field func(o *Options) *T) *keeper {
	return &keeper{
		text: func(o *Options) string {
			return quoteOrNone(fmt.Sprint(*field(o)))
		},
		set: func(to, from *Options) { *field(to) = *field(from) },
	}
}

// keepRunAs keeps the identity workers run with, shown by text.
func keepRunAs(text func(r *RunAs) string) *keeper {
	return &keeper{
		text: func(o *Options) string { return quoteOrNone(text(o.RunAs)) },
		set:  func(to, from *Options) { to.RunAs = from.RunAs },
	}
}

// Key names, as in the config file.
const (
	KeyCommand        = "command"
	KeyEnvironment    = "environment"
	KeyWorkers        = "workers"
	KeyListen         = "listen"
	KeyReady          = "ready"
	KeyReadyTimeout   = "ready_timeout"
	KeyDrainTimeout   = "drain_timeout"
	KeyMinUptime      = "min_uptime"
	KeyRetireParallel = "retire_parallel"
	KeyStopSignal     = "stop_signal"
	KeyReloadStrategy = "reload_strategy"
	KeyBalance        = "balance"
	KeySteerBPF       = "steer_bpf"
	KeyUser           = "user"
	KeyGroup          = "group"
	KeyWorkerOutput   = "worker_output"
	KeyMaxMemory      = "max_memory"
	KeyHangTimeout    = "hang_timeout"
	KeyStartAttempts  = "start_attempts"
	KeyWatchdog       = "watchdog"
	KeyHealth         = "health"
	KeyHealthInterval = "health_interval"
	KeyHealthFailures = "health_failures"
	KeyAdmin          = "admin"
	KeyControl        = "control"
	KeyPIDFile        = "pid_file"
	KeyLogFormat      = "log_format"
	KeyLogLevel       = "log_level"
)

// Keys returns every setting but the command, in the order help shows
// them.
func Keys() []Key {
	ks := []Key{
		{Name: KeyListen, Flag: "listen", Arg: "NAME=URL", Repeatable: true,
			Usage: "a socket to listen on, passed to workers as fds 3, 4, ... in this order: tcp://HOST:PORT, tcp4://..., tcp6://[HOST]:PORT, udp://HOST:PORT or unix:///PATH (unix only: ?mode=0660&owner=USER&group=GROUP); repeatable, and replaces the config file's listen blocks"},
		{Name: KeyWorkers, Flag: "workers", Arg: "N|auto", Default: "auto",
			Usage: "workers per generation, 1 to 1024; auto is GOMAXPROCS, which honours a container CPU quota"},
		{Name: KeyReady, Flag: "ready", Arg: "MODE", Default: "notify", Choices: []string{"notify", "delay=", "tcp", "http=/"},
			Usage: "when a worker is ready: notify (READY=1 on NOTIFY_SOCKET), delay=D (alive that long), tcp (accepts a connection on its own socket) or http=/PATH (answers 2xx or 3xx there); READY=1 counts with notify and delay, a probe alone with tcp and http"},
		{Name: KeyReadyTimeout, Flag: "ready-timeout", Arg: "D", Default: "60s",
			Usage: "a worker not ready by then is killed: a failure"},
		{Name: KeyDrainTimeout, Flag: "drain-timeout", Arg: "D", Default: "30s",
			Usage: "how long a worker may take to exit after the stop signal before SIGKILL"},
		{Name: KeyMinUptime, Flag: "min-uptime", Arg: "D", Default: "1s",
			Usage: "how long a worker must stay up after READY: a reload's probation, and the line between a crash loop (backoff) and a worker to replace at once; 0 disables probation"},
		{Name: KeyRetireParallel, Flag: "retire-parallel", Arg: "N", Default: "1",
			Usage: "how many old workers a reload retires at once"},
		{Name: KeyStopSignal, Flag: "stop-signal", Arg: "SIG", Default: "SIGTERM",
			Usage: "the signal that asks a worker to drain and exit"},
		{Name: KeyReloadStrategy, Flag: "reload-strategy", Arg: "surge|rolling", Default: "surge", Choices: []string{"surge", "rolling"},
			Usage: "surge starts all new workers at once (2N processes for a moment); rolling replaces one at a time (at most N+1)"},
		{Name: KeyBalance, Flag: "balance", Arg: "steer|sticky|shared", Default: "steer", Choices: []string{"steer", "sticky", "shared"}, restart: keepField(func(o *Options) *Balance { return &o.Balance }),
			Usage: "how new connections reach workers: steer (a socket per worker, round-robin, drained before a worker stops), sticky (by client address) or shared (one socket for all)"},
		{Name: KeySteerBPF, Flag: "steer-bpf", Arg: "auto|ebpf|cbpf", Default: "auto", Choices: []string{"auto", "ebpf", "cbpf"}, restart: keepField(func(o *Options) *string { return &o.SteerBPF }),
			Usage: "how the kernel is told where connections go: auto (eBPF where allowed: root or CAP_BPF and CAP_NET_ADMIN, else classic BPF), ebpf or cbpf"},
		{Name: KeyEnvironment, Flag: "env", Arg: "KEY=VALUE", Repeatable: true,
			Usage: "add a variable to the workers' environment; repeatable, and overrides the config file's environment key by key"},
		{Name: KeyUser, Flag: "user", Arg: "NAME|UID", restart: keepRunAs(runAsUser),
			Usage: "run workers as this user (needs root); the group defaults to the user's"},
		{Name: KeyGroup, Flag: "group", Arg: "NAME|GID", restart: keepRunAs(runAsGroup),
			Usage: "run workers with this group (needs root)"},
		{Name: KeyWorkerOutput, Flag: "worker-output", Arg: "inherit|prefix|json", Default: "auto", Choices: []string{"auto", "inherit", "prefix", "json"}, restart: keepField(func(o *Options) *WorkerOutput { return &o.WorkerOutput }),
			Usage: "workers' stdout and stderr: inherit (the master's, as is), prefix (each line after [slot N gen G]) or json (one JSON object a line); auto is inherit when stderr is the journal, else prefix"},
		{Name: KeyMaxMemory, Flag: "max-memory", Arg: "SIZE", Default: "0",
			Usage: "replace a worker gracefully once its memory exceeds SIZE (512MiB, 1GiB, 800MB; K, M, G are 1024-based as in systemd); 0 is off"},
		{Name: KeyStartAttempts, Flag: "start-attempts", Arg: "N", Default: "5", restart: keepField(func(o *Options) *int { return &o.StartAttempts }),
			Usage: "outside systemd, give up (exit 1, with the reason) when every slot of the first generation has failed to start N times in a row, no worker ever ready; 0 keeps trying (under systemd, always: TimeoutStartSec= decides)"},
		{Name: KeyHangTimeout, Flag: "hang-timeout", Arg: "D", Default: "5s",
			Usage: "a ready worker whose accept queue does not move gets no new connections at once (100ms), and is replaced once its queue has not moved for D; 0 never replaces it"},
		{Name: KeyWatchdog, Flag: "watchdog", Arg: "D", Default: "0",
			Usage: "like systemd's WatchdogSec=: each worker gets WATCHDOG_USEC, and one that sends no WATCHDOG=1 for D after READY (or sends WATCHDOG=trigger) is replaced; 0 is off"},
		{Name: KeyHealth, Flag: "health", Arg: "tcp|http=/PATH", Choices: []string{"tcp", "http=/"},
			Usage: "check every ready worker through its own socket: tcp (accepts) or http=/PATH (answers 2xx or 3xx); the first failure steers connections away, --health-failures in a row replace it, a success steers them back; off by default"},
		{Name: KeyHealthInterval, Flag: "health-interval", Arg: "D", Default: "1s",
			Usage: "how often --health checks each worker"},
		{Name: KeyHealthFailures, Flag: "health-failures", Arg: "N", Default: "3",
			Usage: "failed --health checks in a row that replace a worker"},
		{Name: KeyAdmin, Flag: "admin", Arg: "HOST:PORT", restart: keepField(func(o *Options) *string { return &o.Admin }),
			Usage: "serve health, readiness and metrics over HTTP on this address (off by default)"},
		{Name: KeyControl, Flag: "control", Arg: "PATH", restart: keepField(func(o *Options) *string { return &o.Control }),
			Usage: "the control socket (default $RUNTIME_DIRECTORY/handoff.sock, else $XDG_RUNTIME_DIR/handoff.sock, else /run/handoff/handoff.sock for root and $TMPDIR/handoff-UID/handoff.sock for others)"},
		{Name: KeyPIDFile, Flag: "pid-file", Arg: "FILE", restart: keepField(func(o *Options) *string { return &o.PIDFile }),
			Usage: "write the master's pid here once it serves (for PIDFile=); removed on a clean stop"},
		{Name: KeyLogFormat, Flag: "log-format", Arg: "text|json", Default: "text", Choices: []string{"text", "json"}, restart: keepField(func(o *Options) *string { return &o.LogFormat }),
			Usage: "the master's log format on stderr"},
		{Name: KeyLogLevel, Flag: "log-level", Arg: "LEVEL", Default: "info", Choices: []string{"trace", "debug", "info", "warn", "error"}, restart: keepField(func(o *Options) *string { return &o.LogLevel }),
			Usage: "trace, debug, info, warn or error"},
	}
	for i := range ks {
		ks[i].Restart = ks[i].restart != nil
	}
	return ks
}

// ReadyMode is how a worker is judged ready.
type ReadyMode string

// Ready modes. READY=1 on the worker's NOTIFY_SOCKET marks it ready in
// the notify and delay modes; with a probe (tcp, http) only the probe
// does, since a server that sends READY=1 early (gunicorn's arbiter) is
// what a probe is for.
const (
	// ReadyNotify waits for READY=1.
	ReadyNotify ReadyMode = "notify"
	// ReadyDelay counts a worker ready once it has been alive for
	// Ready.Delay.
	ReadyDelay ReadyMode = "delay"
	// ReadyTCP counts a worker ready once it accepts a TCP connection.
	ReadyTCP ReadyMode = "tcp"
	// ReadyHTTP counts a worker ready once it answers a GET of Ready.Path
	// with a 2xx status.
	ReadyHTTP ReadyMode = "http"
)

// Ready is when a worker counts as ready.
type Ready struct {
	Mode ReadyMode
	// Delay is set for ReadyDelay: positive, below ReadyTimeout.
	Delay time.Duration
	// Path is set for ReadyHTTP: an absolute URL path, perhaps with a
	// query ("/healthz", "/ready?full=1").
	Path string
}

// Balance is how connections spread over the workers.
type Balance string

// Balance modes.
const (
	// BalanceSteer gives each worker a socket of its own in one
	// SO_REUSEPORT group, new connections going round-robin.
	BalanceSteer Balance = "steer"
	// BalanceSticky steers by client address.
	BalanceSticky Balance = "sticky"
	// BalanceShared hands one socket to every worker.
	BalanceShared Balance = "shared"
)

// WorkerOutput is what becomes of the workers' stdout and stderr.
type WorkerOutput string

// Worker output modes. The config's "auto" is resolved by Load: Inherit
// when the master's stderr is the journal, else Prefix.
const (
	// OutputInherit passes the master's stdout and stderr on as they are.
	OutputInherit WorkerOutput = "inherit"
	// OutputPrefix prefixes each line with the worker's slot and generation.
	OutputPrefix WorkerOutput = "prefix"
	// OutputJSON writes each line as a JSON object with slot, pid,
	// generation and stream.
	OutputJSON WorkerOutput = "json"
)

// RunAs is the identity workers run with.
type RunAs struct {
	// User and Group are the names as given (a name or a number); User
	// is empty when only a group was given.
	User, Group string
	// UID and GID are what the workers get. With only a group given, UID
	// is the master's own.
	UID, GID uint32
	// Groups are the user's supplementary groups (from the group
	// database; empty with only a group given).
	Groups []uint32
}

// Listen is one listening socket: where, and for unix sockets the
// permissions of its path.
type Listen struct {
	upgrade.Spec
	// Mode, if not zero, is the unix socket path's permission bits, set
	// after bind (HasMode tells 0 apart from unset).
	Mode    os.FileMode
	HasMode bool
	// Owner and Group, if set, are what the unix socket path is chowned
	// to after bind: names or numbers as given, and resolved. UID and
	// GID are -1 when not set.
	Owner, Group string
	UID, GID     int
}

// Options are the validated settings of 'handoff run'.
type Options struct {
	// Path is the config file's path as given, empty without one.
	Path string
	// Command is the worker's argv: the command line's, else the file's.
	Command []string
	// Environment is added to the workers' environment, as KEY=VALUE
	// sorted by key. It never names a variable handoff sets itself.
	Environment []string
	// Workers is the number of workers per generation; WorkersAuto says
	// it was "auto" (GOMAXPROCS at the time Load ran).
	Workers     int
	WorkersAuto bool
	// Listen are the sockets, in fd order. Empty is allowed (Warnings
	// then says so).
	Listen []Listen
	// Ready is when a worker counts as ready.
	Ready Ready
	// ReadyTimeout, DrainTimeout: see the flags. Both positive.
	ReadyTimeout, DrainTimeout time.Duration
	// MinUptime is the probation after READY; zero means none.
	MinUptime time.Duration
	// RetireParallel is how many old workers a reload retires at once.
	RetireParallel int
	// StopSignal asks a worker to drain.
	StopSignal syscall.Signal
	// Strategy is how a reload replaces workers.
	Strategy workers.Strategy
	// Balance is how connections spread over workers.
	Balance Balance
	// SteerBPF is auto, ebpf or cbpf: how steering programs are loaded.
	SteerBPF string
	// RunAs, if not nil, is the identity workers run with.
	RunAs *RunAs
	// WorkerOutput is resolved: never "auto".
	WorkerOutput WorkerOutput
	// MaxMemory, in bytes, is the memory above which a worker is
	// replaced; zero is off.
	MaxMemory int64
	// HangTimeout replaces a worker whose queue has not moved that long
	// (zero: never); Watchdog is each worker's WATCHDOG_USEC (zero: off).
	HangTimeout, Watchdog time.Duration
	// StartAttempts bounds the first generation's failed starts per slot
	// outside systemd; zero is no bound.
	StartAttempts int
	// Health, if its Mode is set (tcp or http), checks ready workers
	// every HealthInterval; HealthFailures in a row replace one.
	Health         Ready
	HealthInterval time.Duration
	HealthFailures int
	// Admin is the HTTP admin endpoint's HOST:PORT; empty is off.
	Admin string
	// Control is the control socket's path; empty means the default.
	Control string
	// PIDFile, if set, gets the master's pid.
	PIDFile string
	// LogFormat is "text" or "json"; LogLevel an hclog level name.
	LogFormat, LogLevel string
	// Warnings are things worth one log line each that do not stop
	// handoff (no listener, for instance).
	Warnings []string

	// flags are the command-line overrides Load was given: Reload
	// applies them again.
	flags Flags
	// autoWorkers is what "auto" meant for Workers at the first Load.
	autoWorkers int
}

// Flags is what the command line set: the values of the flags given, by
// key name (several for a repeatable flag), and the command after "--".
// Flags not given must be absent: their defaults would override the file.
type Flags struct {
	Values  map[string][]string
	Command []string
}

func (f Flags) clone() Flags {
	c := Flags{Values: make(map[string][]string, len(f.Values)), Command: append([]string(nil), f.Command...)}
	for k, v := range f.Values {
		c.Values[k] = append([]string(nil), v...)
	}
	return c
}
