// Command handoff runs a network server as one master process and a
// generation of worker processes, and replaces the workers (or itself)
// with zero downtime. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

const usage = `handoff runs a server as a master and per-core workers, with zero-downtime reloads.

Usage:
  handoff run [flags] -- COMMAND [ARGS...]   run COMMAND as workers on the --listen sockets
  handoff reload [--wait] [--timeout D]      start a new generation (as SIGHUP does)
  handoff status [--json]                    show generations and workers
  handoff stop                               stop the master (as SIGTERM does)
  handoff version                            print handoff's version

Run 'handoff COMMAND -h' for a command's flags.
`

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ error }

func main() {
	// A worker being started passes through here on its way to exec the
	// real command: nothing may run before this.
	workers.ExecShim()
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the CLI and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "stop":
		err = cmdStop(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "handoff", version)
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usageError{fmt.Errorf("unknown command %q (want run, reload, status or stop)", args[0])}
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "handoff: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// newFlagSet makes a flag set that reports errors through its return
// value only (Main prints the one line).
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("handoff "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args and, on -h, prints the flags to stderr.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}

// runOptions are the parsed flags of 'handoff run'.
type runOptions struct {
	admin          string // HOST:PORT of the admin endpoint, or ""
	specs          []upgrade.Spec
	workers        int
	readyDelay     time.Duration
	probe          *workers.Probe // --ready tcp or http=/PATH
	readyTimeout   time.Duration
	drainTimeout   time.Duration
	minUptime      time.Duration
	retireParallel int
	stopSignal     syscall.Signal
	strategy       workers.Strategy
	balance        string
	steerBPF       string
	control        string
	pidFile        string
	logFormat      string
	logLevel       string
	command        []string
}

func parseRun(args []string, stderr io.Writer) (*runOptions, error) {
	o := &runOptions{}
	fs := newFlagSet("run")
	fs.Func("listen", "`NAME=URL` to listen on: tcp://HOST:PORT, tcp6://[HOST]:PORT, udp://HOST:PORT or unix:///PATH (repeatable; passed to workers as fds 3, 4, … in this order)", func(s string) error {
		spec, err := upgrade.ParseSpec(s)
		if err != nil {
			return err
		}
		for _, x := range o.specs {
			if x.Name == spec.Name {
				return fmt.Errorf("listen: name %q used twice", spec.Name)
			}
		}
		o.specs = append(o.specs, spec)
		return nil
	})
	workersFlag := fs.String("workers", "auto", "number of workers, or `auto` for GOMAXPROCS (honours a container CPU quota)")
	ready := fs.String("ready", "notify", "when a worker is ready: `notify` (READY=1 on NOTIFY_SOCKET) or delay=DURATION (alive that long)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long a worker may take to become ready")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "how long a worker may take to exit after the stop signal before it is killed")
	fs.DurationVar(&o.minUptime, "min-uptime", workers.DefaultMinUptime, "how long a worker must stay up after READY: a reload's probation, and the line between a crash loop (backoff) and a worker to replace at once (0: no probation)")
	fs.IntVar(&o.retireParallel, "retire-parallel", 1, "how many old workers a reload retires at once")
	stopSig := fs.String("stop-signal", "SIGTERM", "signal that asks a worker to drain and exit")
	fs.StringVar(&o.balance, "balance", "steer", "how new connections reach workers: `steer` (a socket per worker, round-robin, drained before a worker stops), sticky (by client address) or shared (one socket for all)")
	fs.StringVar(&o.steerBPF, "steer-bpf", "auto", "how the kernel is told where connections go: `auto` (eBPF where allowed: root or CAP_BPF and CAP_NET_ADMIN, else classic BPF), ebpf or cbpf")
	strategy := fs.String("reload-strategy", "surge", "`surge` (start all new workers, then retire old ones one by one) or rolling (replace one at a time)")
	fs.StringVar(&o.control, "control", "", "control socket `path` (default: see 'handoff status -h')")
	fs.StringVar(&o.admin, "admin", "", "serve health, readiness and metrics over HTTP on this `HOST:PORT` (off by default)")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the master's pid to this `file` (for PIDFile= units)")
	fs.StringVar(&o.logFormat, "log-format", "text", "`text` or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	if err := parseFlags(fs, args, stderr); err != nil {
		return nil, err
	}
	o.command = fs.Args()
	if len(o.command) == 0 {
		return nil, usageError{errors.New("run: no command given (usage: handoff run [flags] -- COMMAND [ARGS...])")}
	}
	if *workersFlag == "auto" {
		o.workers = runtime.GOMAXPROCS(0)
	} else {
		n, err := strconv.Atoi(*workersFlag)
		if err != nil || n < 1 || n > workers.MaxWorkers {
			return nil, usageError{fmt.Errorf("--workers %q: want auto or a number from 1 to %d (one per core is usual; this machine has %d)", *workersFlag, workers.MaxWorkers, runtime.NumCPU())}
		}
		o.workers = n
	}
	switch {
	case *ready == "notify":
	case strings.HasPrefix(*ready, "delay="):
		d, err := time.ParseDuration(strings.TrimPrefix(*ready, "delay="))
		if err != nil || d <= 0 {
			return nil, usageError{fmt.Errorf("--ready %q: want delay=DURATION, e.g. delay=2s", *ready)}
		}
		o.readyDelay = d
	case *ready == "tcp":
		o.probe = &workers.Probe{}
	case strings.HasPrefix(*ready, "http="):
		path := strings.TrimPrefix(*ready, "http=")
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n") {
			return nil, usageError{fmt.Errorf("--ready %q: want http=/PATH, e.g. http=/healthz", *ready)}
		}
		o.probe = &workers.Probe{HTTP: path}
	default:
		return nil, usageError{fmt.Errorf("--ready %q: want notify, delay=DURATION, tcp or http=/PATH", *ready)}
	}
	if o.readyTimeout <= 0 || o.drainTimeout <= 0 {
		return nil, usageError{errors.New("--ready-timeout and --drain-timeout must be positive")}
	}
	if o.minUptime < 0 {
		return nil, usageError{fmt.Errorf("--min-uptime %s: must not be negative", o.minUptime)}
	}
	if o.minUptime == 0 {
		o.minUptime = -1 // workers.Config: negative means none
	}
	if o.retireParallel < 1 || o.retireParallel > workers.MaxWorkers {
		return nil, usageError{fmt.Errorf("--retire-parallel %d: want a number from 1 to %d", o.retireParallel, workers.MaxWorkers)}
	}
	if o.readyDelay >= o.readyTimeout {
		return nil, usageError{fmt.Errorf("--ready delay=%s must be shorter than --ready-timeout %s", o.readyDelay, o.readyTimeout)}
	}
	sig, err := parseSignal(*stopSig)
	if err != nil {
		return nil, usageError{err}
	}
	o.stopSignal = sig
	switch s := workers.Strategy(*strategy); s {
	case workers.Surge, workers.Rolling:
		o.strategy = s
	default:
		return nil, usageError{fmt.Errorf("--reload-strategy %q: want surge or rolling", *strategy)}
	}
	switch o.balance {
	case "steer", "sticky", "shared":
	default:
		return nil, usageError{fmt.Errorf("--balance %q: want steer, sticky or shared", o.balance)}
	}
	switch o.steerBPF {
	case "auto", "ebpf", "cbpf":
	default:
		return nil, usageError{fmt.Errorf("--steer-bpf %q: want auto, ebpf or cbpf", o.steerBPF)}
	}
	switch o.logFormat {
	case "text", "json":
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", o.logFormat)}
	}
	if hclog.LevelFromString(o.logLevel) == hclog.NoLevel {
		return nil, usageError{fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", o.logLevel)}
	}
	return o, nil
}

func parseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("--stop-signal %q: unknown signal", s)
}

func newLogger(o *runOptions, stderr io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "handoff",
		Level:      hclog.LevelFromString(o.logLevel),
		JSONFormat: o.logFormat == "json",
		Output:     stderr,
		Color:      hclog.AutoColor,
	})
}

// defaultControlPath is where the control socket lives unless --control
// says otherwise: in systemd's RuntimeDirectory= if the unit has one, else
// in $XDG_RUNTIME_DIR, else in /tmp/handoff-UID.
func defaultControlPath() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":")
		return d + "/handoff.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return d + "/handoff.sock"
	}
	return fmt.Sprintf("%s/handoff-%d/handoff.sock", os.TempDir(), os.Getuid())
}

func controlFlag(fs *flag.FlagSet) *string {
	return fs.String("control", "", "control socket `path` (default $RUNTIME_DIRECTORY/handoff.sock, else $XDG_RUNTIME_DIR/handoff.sock, else $TMPDIR/handoff-UID/handoff.sock)")
}

func controlPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return defaultControlPath()
}

// closeInheritedFds marks every descriptor from 3 up close-on-exec: Go's
// exec does not close stray descriptors, and whatever the master inherited
// must not leak into workers. Descriptors handoff passes on are given to
// workers explicitly.
func closeInheritedFds() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
}
