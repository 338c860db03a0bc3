package workers

import (
	"encoding/json"
	"time"
)

// EventKind says what happened.
type EventKind int

// Lifecycle events, for sd_notify and the admin endpoint.
const (
	// EventServing: a generation serves for the first time.
	EventServing EventKind = iota + 1
	// EventReloading: a reload (or master upgrade) started.
	EventReloading
	// EventReloaded: a reload ended, well or not (Event.Reload says).
	EventReloaded
	// EventHandedOver: a new master took over; this one now retires its
	// workers and will not speak for the service again.
	EventHandedOver
	// EventStopping: the master is about to stop its workers. It comes
	// before any worker gets its stop signal.
	EventStopping
	// EventChanged: workers changed state.
	EventChanged
)

// Event is passed to Config.OnEvent.
type Event struct {
	Kind       EventKind
	Generation int
	Reload     *ReloadResult
	Status     Status
}

// ReloadRequest asks for a reload.
type ReloadRequest struct {
	// Master asks for the master itself to be upgraded (see
	// Config.UpgradeMaster) instead of the workers.
	Master bool
	// At is when the request was made (a signal's arrival, a control
	// request's): the reload's timing starts there. Zero means now.
	At time.Time
	// Config, if set, is the configuration the new generation runs
	// with (a configuration file read again): its command and
	// environment, number of workers, listeners, readiness, timeouts,
	// stop signal, minimum uptime, strategy, retire-parallel and memory
	// limit. The rest of the supervisor's configuration stays. It
	// becomes the supervisor's once the reload succeeds.
	Config *Config
	// KeepWorkers, with Config, keeps the running number of workers
	// (which scaling may have changed since) rather than Config's: the
	// file did not change its count.
	KeepWorkers bool
	// Outcome, if set, is called once with the reload's result, on the
	// supervisor's goroutine, before the result reaches the channel
	// Reload returned, and whether or not anyone still reads it (or on
	// the caller's goroutine if the supervisor no longer runs). It is
	// where the caller commits what the reload makes current (the
	// listeners and options of a new configuration) or releases what a
	// failure leaves unused: what the master keeps follows the outcome,
	// never whether a client stopped waiting. It must be quick and must
	// not call back into the Supervisor.
	Outcome func(ReloadResult)
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Generation int       `json:"generation"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	Master     bool      `json:"master,omitempty"`
	Started    time.Time `json:"started"`
	// Serving is the time from the request until the new generation
	// served (passed probation); Duration until the old one was gone.
	// They marshal as serving_ms and duration_ms.
	Serving  time.Duration `json:"-"`
	Duration time.Duration `json:"-"`
	// FailedPID is the pid of the new worker whose end failed the
	// reload, if one did.
	FailedPID int `json:"failed_pid,omitempty"`
	// Stderr is the last lines that worker wrote to its stderr (at most
	// TailLines, each at most TailBytes, control characters escaped),
	// when the master reads workers' output (OutputPrefix, OutputJSON);
	// with OutputInherit it went to the master's stderr, unread, and
	// StderrInherited is set.
	Stderr          []string `json:"stderr,omitempty"`
	StderrInherited bool     `json:"stderr_inherited,omitempty"`
}

type reloadResultJSON struct {
	Generation int       `json:"generation"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	Master     bool      `json:"master,omitempty"`
	Started    time.Time `json:"started"`
	ServingMS  float64   `json:"serving_ms"`
	DurationMS float64   `json:"duration_ms"`
	FailedPID  int       `json:"failed_pid,omitempty"`
	Stderr     []string  `json:"stderr,omitempty"`
	Inherited  bool      `json:"stderr_inherited,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func fromMS(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

// MarshalJSON writes the durations as milliseconds.
func (r ReloadResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(reloadResultJSON{r.Generation, r.OK, r.Error, r.Master, r.Started, ms(r.Serving), ms(r.Duration), r.FailedPID, r.Stderr, r.StderrInherited})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *ReloadResult) UnmarshalJSON(b []byte) error {
	var j reloadResultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = ReloadResult{j.Generation, j.OK, j.Error, j.Master, j.Started, fromMS(j.ServingMS), fromMS(j.DurationMS), j.FailedPID, j.Stderr, j.Inherited}
	return nil
}

// WorkerStatus describes one worker, or a slot waiting in backoff.
type WorkerStatus struct {
	Slot int `json:"slot"`
	// Bank is which of its slot's two steered sockets the worker gets.
	Bank       int       `json:"bank"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	State      State     `json:"state"`
	Since      time.Time `json:"since"`
	Restarts   int       `json:"restarts"`
	Status     string    `json:"status,omitempty"`
	// Queue is, per steered listener, the connections waiting in the
	// accept queue of this worker's own socket (for UDP, the bytes of
	// queued datagrams).
	Queue map[string]int `json:"queue,omitempty"`
	// Held is, per steered TCP listener where the kernel counts them
	// (eBPF, least-held selection), the connections this worker's socket
	// holds: waiting in its queue or accepted and not yet closed by it.
	Held map[string]int `json:"held,omitempty"`
	// RSS is the resident memory of the worker's whole process tree, in
	// bytes, and CPU its CPU time in seconds, as last sampled (zero
	// before the first sample).
	RSS int64   `json:"rss_bytes,omitempty"`
	CPU float64 `json:"cpu_seconds,omitempty"`
	// Away, if set, says why the worker gets no new connections though
	// it is ready: its queue does not move, its health check fails, or
	// it is being replaced as hung (liveness.go).
	Away string `json:"away,omitempty"`
	// LastExit is how the slot's last worker that was not stopped on
	// purpose ended (a backoff's reason, say).
	LastExit string `json:"last_exit,omitempty"`
	// LastExitKind classifies LastExit as Counters.Restarts does:
	// "failed", "killed", "exited", or the liveness rule that replaced
	// it ("hung", "watchdog", "unhealthy"), or "memory".
	LastExitKind string `json:"last_exit_kind,omitempty"`
	// LastStderr is the last lines that worker wrote to its stderr, as
	// ReloadResult.Stderr.
	LastStderr []string `json:"last_stderr,omitempty"`
	// AwayFor names the rule behind Away: "queue", "health", or, once
	// it is being replaced, "hung", "watchdog" or "unhealthy".
	AwayFor string `json:"away_for,omitempty"`
}

// Counters count what happened since the master started.
type Counters struct {
	// Restarts counts replaced workers by reason: "failed" (exited
	// before ready, or on its own within the minimum uptime: backed
	// off), "killed" (killed from outside after ready: replaced at
	// once), "exited" (exited after its minimum uptime: replaced at
	// once), "memory" (recycled above --max-memory), "hung" (its accept
	// queue did not move for the hang timeout), "watchdog" (no
	// WATCHDOG=1 in time, or WATCHDOG=trigger), "unhealthy" (its health
	// check failed too often).
	Restarts map[string]int `json:"restarts"`
	// Reloads counts reloads by result: "ok", "failed" (rolled back),
	// "master_ok", "master_failed" (master upgrades).
	Reloads map[string]int `json:"reloads"`
}

// GenerationStatus describes one live generation.
type GenerationStatus struct {
	Generation int      `json:"generation"`
	Phase      GenPhase `json:"phase"`
	Command    string   `json:"command"`
}

// RolloverStatus describes the reload under way.
type RolloverStatus struct {
	Generation int           `json:"generation"`
	Master     bool          `json:"master,omitempty"`
	Strategy   Strategy      `json:"strategy,omitempty"`
	Phase      RolloverPhase `json:"phase"`
	// ProbationEnds, in the probation phase, is when the new workers
	// will have served the minimum uptime (zero otherwise).
	ProbationEnds time.Time `json:"probation_ends,omitzero"`
	// Workers is how many workers the new generation runs.
	Workers int `json:"workers,omitempty"`
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
	// Balance is "steer" or "sticky" for a kernel-steered group of
	// sockets (one per slot), "shared" for one socket all workers share.
	Balance string `json:"balance"`
	// Mechanism is "ebpf" or "cbpf" for a steered group.
	Mechanism string `json:"mechanism,omitempty"`
	// Selection is how the kernel picks a socket: "round-robin",
	// "flow-hash" or "client-address".
	Selection string `json:"selection,omitempty"`
	// Foreign counts sockets on the listener's address that are not the
	// master's (another program's SO_REUSEPORT socket): connections the
	// kernel gives them reach no worker of ours.
	Foreign int `json:"foreign,omitempty"`
}

// Status is a snapshot of the supervisor.
type Status struct {
	// Version is the master's own version (its runner sets it).
	Version string      `json:"version,omitempty"`
	PID     int         `json:"pid"`
	Started time.Time   `json:"started"`
	Phase   MasterPhase `json:"phase"`
	// Generation is the serving generation (before any serves: the one
	// starting).
	Generation int  `json:"generation"`
	Serving    bool `json:"serving"`
	// Reloading is the generation a running reload rolls out, if any.
	Reloading int             `json:"reloading,omitempty"`
	Rollover  *RolloverStatus `json:"rollover,omitempty"`
	// ReloadPending is set when a reload was asked for and has not
	// started yet (it waits for the running one).
	ReloadPending bool               `json:"reload_pending,omitempty"`
	Counters      Counters           `json:"counters"`
	Generations   []GenerationStatus `json:"generations"`
	Workers       []WorkerStatus     `json:"workers"`
	LastReload    *ReloadResult      `json:"last_reload"`
	Listeners     []ListenerStatus   `json:"listeners"`
}
