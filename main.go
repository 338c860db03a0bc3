// Command handoff runs a network server as one master process and a
// generation of worker processes, and replaces the workers (or itself)
// with zero downtime. See README.md.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/config"
	"github.com/handoff-dev/handoff/control"
	"github.com/handoff-dev/handoff/internal/logsink"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// Without it, versionString reads the module's build information.
var version string

func main() {
	// A worker being started passes through here on its way to exec the
	// real command: nothing may run before this. (Package initialisation
	// does: keep it cheap, no init() here.)
	workers.ExecShim()
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the CLI and returns the exit status: 0, 1 for a runtime
// error, 2 for a usage error. Each error is one line "handoff: …" on
// stderr (a config file with several problems gets one line each).
func Main(args []string, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // cobra would read os.Args
	}
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	_, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	return reportError(err, stderr)
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// runtimeError is a failure of a command that was used correctly: exit
// status 1.
type runtimeError struct{ error }

func (e runtimeError) Unwrap() error { return e.error }

// errSilentUsage is a usage error that was already explained (handoff
// with no command prints its help).
var errSilentUsage = usageError{errors.New("")}

// reportError prints err and returns the exit status for it. Errors that
// no command returned come from parsing the command line: usage errors.
func reportError(err error, stderr io.Writer) int {
	code := 2
	var (
		ce *config.Error
		re runtimeError
		xe exitError
	)
	switch {
	case errors.As(err, &xe):
		code = xe.ExitCode()
	case errors.As(err, &re):
		code = 1
	case errors.As(err, &ce):
		if !ce.Usage() {
			code = 1
		}
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(stderr, "handoff: %s\n", line)
		}
	}
	return code
}

// runOptions are the settings of 'handoff run', from its flags and its
// config file, parsed once by package config: run.go consumes them as
// they are.
type runOptions = config.Options

// specsOf lists the listeners' specs, in fd order.
func specsOf(o *runOptions) []upgrade.Spec {
	var specs []upgrade.Spec
	for _, l := range o.Listen {
		specs = append(specs, l.Spec)
	}
	return specs
}

// minUptime is workers.Config.MinUptime for o: negative means no
// probation (--min-uptime 0), where zero would mean the default.
func minUptime(o *runOptions) time.Duration {
	if o.MinUptime == 0 {
		return -1
	}
	return o.MinUptime
}

// reloadRunOptions reads the config file of a running master again, for
// a reload, and applies the same command-line flags over it. It has no
// side effects. On error (one line per problem, with file positions) the
// reload must be rejected and cur stays in force. Settings that apply
// only at a restart (user, group, admin, control, pid_file, log_format,
// log_level) keep cur's values, and each one that changed gets a
// warning; next.Warnings are included in warnings.
func reloadRunOptions(cur *runOptions) (next *runOptions, warnings []string, err error) {
	c, warnings, err := config.Reload(cur)
	if err != nil {
		return nil, nil, err
	}
	return c, warnings, nil
}

// parseRun parses the arguments of 'handoff run' (flags, then the command
// after "--") and reads the --config file, if any.
func parseRun(args []string, stderr io.Writer) (*runOptions, error) {
	fs := pflag.NewFlagSet("handoff run", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	rf := addRunFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, flagError(fs, err)
	}
	c, err := config.Load(rf.config, rf.configFlags(fs, fs.Args()))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// runFlags holds the raw values of 'handoff run's flags: a text or list
// flag per config key, and --config.
type runFlags struct {
	config string
	text   map[string]*string   // by key name
	lists  map[string]*listFlag // by key name
}

// addRunFlags defines the flags of 'handoff run' on fs.
func addRunFlags(fs *pflag.FlagSet) *runFlags {
	rf := &runFlags{text: map[string]*string{}, lists: map[string]*listFlag{}}
	fs.Var(&textFlag{p: &rf.config, arg: "FILE"}, "config", "read settings from this HCL config file (a key for every flag; flags given override it); 'handoff check --config FILE' checks one")
	for _, k := range config.Keys() {
		if k.Repeatable {
			l := &listFlag{arg: k.Arg}
			rf.lists[k.Name] = l
			fs.Var(l, k.Flag, k.Usage)
			continue
		}
		s := new(string)
		*s = k.Default
		rf.text[k.Name] = s
		fs.Var(&textFlag{p: s, arg: k.Arg}, k.Flag, k.Usage)
	}
	return rf
}

// configFlags returns the flags given (and only those: the others must
// not override the config file) and the command.
func (rf *runFlags) configFlags(fs *pflag.FlagSet, command []string) config.Flags {
	f := config.Flags{Values: map[string][]string{}, Command: command}
	for _, k := range config.Keys() {
		if !fs.Changed(k.Flag) {
			continue
		}
		if l, ok := rf.lists[k.Name]; ok {
			f.Values[k.Name] = append([]string(nil), l.values...)
		} else {
			f.Values[k.Name] = []string{*rf.text[k.Name]}
		}
	}
	return f
}

// textFlag is a string flag whose help names its value (`--workers
// N|auto`); every value is checked later, by package config.
type textFlag struct {
	p   *string
	arg string
}

func (f *textFlag) Set(s string) error { *f.p = s; return nil }
func (f *textFlag) String() string {
	if f.p == nil {
		return ""
	}
	return *f.p
}
func (f *textFlag) Type() string { return f.arg }

// listFlag is a repeatable flag.
type listFlag struct {
	values []string
	arg    string
}

func (f *listFlag) Set(s string) error { f.values = append(f.values, s); return nil }
func (f *listFlag) String() string     { return strings.Join(f.values, ",") }
func (f *listFlag) Type() string       { return f.arg }

// Append, Replace and GetSlice make listFlag a pflag.SliceValue, so that
// canonicalArgs can repeat it.
func (f *listFlag) Append(s string) error { return f.Set(s) }

func (f *listFlag) Replace(s []string) error { f.values = append([]string(nil), s...); return nil }

func (f *listFlag) GetSlice() []string { return append([]string(nil), f.values...) }

// canonicalArgs renders the flags set in fs and the positional arguments
// back into arguments that parse to the same: --name=value for each flag
// given (each value of a repeatable one), then "--", then args.
func canonicalArgs(fs *pflag.FlagSet, args []string) []string {
	var out []string
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				out = append(out, "--"+f.Name+"="+v)
			}
			return
		}
		out = append(out, "--"+f.Name+"="+f.Value.String())
	})
	return append(append(out, "--"), args...)
}

// flagError rewords pflag's parse errors as usage errors, with a
// suggestion for a misspelt flag.
func flagError(fs *pflag.FlagSet, err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		if s := suggestFlag(fs, name); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
	} else if _, word, ok := strings.Cut(msg, "unknown shorthand flag: "); ok {
		// -workers: "unknown shorthand flag: 'w' in -workers"
		if _, word, ok = strings.Cut(word, " in -"); ok {
			name, _, _ := strings.Cut(word, "=")
			switch s := suggestFlag(fs, name); {
			case fs.Lookup(name) != nil:
				msg = fmt.Sprintf("unknown flag -%s: long flags take two dashes: --%s", name, name)
			case s != "":
				msg = fmt.Sprintf("unknown flag -%s (did you mean --%s?)", name, s)
			default:
				msg = fmt.Sprintf("unknown flag -%s", name)
			}
		}
	}
	return usageError{errors.New(msg)}
}

// suggestFlag returns the flag of fs nearest to name, if one is near
// enough to be a likely typo.
func suggestFlag(fs *pflag.FlagSet, name string) string {
	best, bestD := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := levenshtein(name, f.Name)
		if len(name) >= 3 && strings.HasPrefix(f.Name, name) && d > 2 {
			d = 2 // --drain for --drain-timeout
		}
		if d < bestD || d == bestD && f.Name < best {
			best, bestD = f.Name, d
		}
	})
	if bestD > 2 || bestD >= len(name) {
		return ""
	}
	return best
}

// levenshtein is the edit distance between a and b (in bytes: flag names
// are ASCII).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// newLogger makes the master's logger; mu is the lock it takes around
// each line, which the workers' forwarded output takes too. Its output
// is stderr through a log sink (newLogSink), unless stderr is one
// already: a log reader that goes away must not stop the master.
func newLogger(o *runOptions, stderr io.Writer, mu sync.Locker) hclog.Logger {
	if _, ok := stderr.(*logsink.Writer); !ok {
		stderr = newLogSink(o, stderr)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "handoff",
		Level:      hclog.LevelFromString(o.LogLevel),
		JSONFormat: o.LogFormat == "json",
		Output:     stderr,
		Color:      hclog.AutoColor,
		Mutex:      mu,
	})
}

// sigpipe is where SIGPIPE goes: nowhere (see newLogSink).
var (
	sigpipeOnce sync.Once
	sigpipe     = make(chan os.Signal, 1)
)

// newLogSink wraps the master's stderr so that its failing never stops
// the master: the lines the output refuses are counted and dropped
// (Dropped, for handoff_log_lines_dropped_total) and a line in the
// log's format says how many once it takes lines again. It also
// handles SIGPIPE, which otherwise kills a Go program whose write to fd
// 1 or 2 meets a pipe without reader (`handoff run … 2>&1 | head`, a
// journald stream gone): with it handled, the write returns EPIPE.
// Handled, not ignored: an ignored signal stays ignored in the workers.
func newLogSink(o *runOptions, stderr io.Writer) *logsink.Writer {
	sigpipeOnce.Do(func() { signal.Notify(sigpipe, syscall.SIGPIPE) })
	json := o.LogFormat == "json"
	return logsink.New(stderr, logsink.Options{
		Notice: func(dropped uint64, kept int, err error) []byte {
			var b bytes.Buffer
			hclog.New(&hclog.LoggerOptions{Name: "handoff", JSONFormat: json, Output: &b, Color: hclog.ColorOff}).
				Warn("log output failed: lines dropped", "dropped", dropped, "kept_lines_follow", kept, "error", err)
			return b.Bytes()
		},
	})
}

// controlPath is the control socket's path: the flag's value, else the
// default (see control.DefaultPath).
func controlPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return control.DefaultPath(os.Getenv, os.Geteuid(), os.TempDir())
}

// versionString is handoff's version: the one set with -ldflags, else
// the module version and VCS revision Go recorded in the binary.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information in the binary)"
	}
	return buildVersion(bi)
}

// buildVersion describes a build from its build information: the module
// version when it is one (go install …@v1.2.3), and the VCS revision and
// whether the tree was modified, when Go recorded them.
func buildVersion(bi *debug.BuildInfo) string {
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	if rev == "" {
		if v == "devel" {
			return "devel (no version control information)"
		}
		return v
	}
	short := rev
	if len(short) > 12 {
		short = short[:12]
	}
	if strings.Contains(v, short) {
		// A pseudo-version names the revision already.
		return v
	}
	extra := "rev " + short
	if modified == "true" {
		extra += ", modified"
	}
	return v + " (" + extra + ")"
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
