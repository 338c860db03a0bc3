package config

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// StderrIsJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM (the env argument) holds its "DEVICE:INODE".
func StderrIsJournal(env string, f *os.File) bool {
	if env == "" || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return env == fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
}

// Reload loads the configuration of a running master again, for a reload:
// the same config file, read anew, with the same command-line flags laid
// over it. Keys that apply only when handoff restarts (Key.Restart, set
// in the table of Keys: balance, steer_bpf, user, group, worker_output,
// start_attempts, admin, control, pid_file, log_format, log_level) keep
// their running values in next, and each one that changed gets a warning;
// next's own Warnings follow. An error (an *Error, as from Load) means
// the reload must be rejected: the running configuration stays.
//
// workers = "auto" keeps meaning GOMAXPROCS as it was when the master
// started (the master lowers its own afterwards). Reload has no side
// effects; running is not changed.
func Reload(running *Options) (next *Options, warnings []string, err error) {
	return reload(running, thisSystem())
}

func reload(running *Options, sys *system) (*Options, []string, error) {
	s := *sys
	if running.autoWorkers > 0 {
		s.autoWorkers = running.autoWorkers // "auto" means what it meant at start
	}
	next, err := load(running.Path, running.flags, &s)
	if err != nil {
		return nil, nil, err
	}
	// Every restart-only key (Key.Restart) keeps its running value; each
	// that changed says so. Values are compared before any is put back:
	// user and group share RunAs.
	var warnings []string
	var keep []*keeper
	for _, k := range Keys() {
		if k.restart == nil {
			continue
		}
		keep = append(keep, k.restart)
		if was, now := k.restart.text(running), k.restart.text(next); was != now {
			warnings = append(warnings, fmt.Sprintf("%s changed from %s to %s: the running value stays until handoff restarts", k.Name, was, now))
		}
	}
	for _, k := range keep {
		k.set(next, running)
	}
	if running.Path != "" {
		for i, w := range warnings {
			warnings[i] = running.Path + ": " + w
		}
	}
	return next, append(warnings, next.Warnings...), nil
}

func runAsUser(r *RunAs) string {
	if r == nil || r.User == "" {
		return ""
	}
	return fmt.Sprintf("%s (uid %d)", r.User, r.UID)
}

func runAsGroup(r *RunAs) string {
	if r == nil {
		return ""
	}
	name := r.Group
	if name == "" {
		name = "the user's"
	}
	s := fmt.Sprintf("%s (gid %d", name, r.GID)
	if len(r.Groups) > 0 {
		s += fmt.Sprintf(", groups %v", strings.Trim(fmt.Sprint(r.Groups), "[]"))
	}
	return s + ")"
}

func quoteOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return fmt.Sprintf("%q", s)
}
