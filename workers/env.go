package workers

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// shimEnv carries the resolved command from the master to the exec shim.
const shimEnv = "HANDOFF_INTERNAL_EXEC"

// cleanEnv returns environ without the variables that describe the
// master's own place under systemd (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*),
// tableflip's and handoff's internal ones, and those handoff sets for each
// worker. A worker must never talk to the master's systemd directly, nor
// believe the master's sockets are its own.
func cleanEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", k == "HANDOFF_WORKER", k == "HANDOFF_GENERATION",
			strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"),
			strings.HasPrefix(k, "HANDOFF_INTERNAL_"), strings.HasPrefix(k, "TABLEFLIP_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// userEnv sets USER, LOGNAME and HOME for workers running as u, as
// systemd's User= and su do.
func userEnv(env []string, u *User) []string {
	if u == nil {
		return env
	}
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k != "USER" && k != "LOGNAME" && k != "HOME" {
			out = append(out, kv)
		}
	}
	out = append(out, "USER="+u.Name, "LOGNAME="+u.Name)
	if u.Home != "" {
		out = append(out, "HOME="+u.Home)
	}
	return out
}

// ExecShim must be called first thing in main. In a process the master
// started as a worker, it sets LISTEN_PID to the process's own pid (which
// os/exec cannot do: the pid is only known after fork) and replaces the
// process with the worker's command, keeping the pid. In any other process
// it returns at once.
func ExecShim() {
	path, ok := os.LookupEnv(shimEnv)
	if !ok {
		return
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, shimEnv+"=") && !strings.HasPrefix(kv, "LISTEN_PID=") {
			env = append(env, kv)
		}
	}
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		env = append(env, fmt.Sprintf("LISTEN_PID=%d", os.Getpid()))
	}
	err := syscall.Exec(path, os.Args, env)
	fmt.Fprintf(os.Stderr, "handoff: cannot execute worker command %s: %v\n", path, err)
	os.Exit(127)
}
