package cli

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"

	"github.com/handoff-dev/handoff/internal/config"
)

// Main runs the command line args and returns the exit status: 0, 1 for
// a runtime error, 2 for a usage error (and the codes of status and
// reload, see client.go). Each error is one line "handoff: …" on stderr
// (a config file with several problems gets one line each). version is
// the one set at build time, or empty: then the build information says.
func Main(version string, args []string, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // cobra would read os.Args
	}
	root := newRootCmd(versionString(version), stdout, stderr)
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

// versionString is handoff's version: the one set with -ldflags, else
// the module version and VCS revision Go recorded in the binary.
func versionString(version string) string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information in the binary)"
	}
	return BuildVersion(bi)
}

// BuildVersion describes a build from its build information: the module
// version when it is one (go install …@v1.2.3), and the VCS revision and
// whether the tree was modified, when Go recorded them.
func BuildVersion(bi *debug.BuildInfo) string {
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
