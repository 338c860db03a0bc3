// Package workers runs generations of worker processes for the master.
//
// A Supervisor keeps one serving generation of Config.Workers processes.
// Each process is a worker, which moves starting → ready → draining →
// exited; every transition happens in worker.run. Each position in a
// generation is a slot, which replaces a worker that exits: at once if it
// had served for a second, after a backoff (100 ms doubling to 30 s) if it
// was failing, so a crash loop never spins and never holds up other slots.
//
// A worker is started the way systemd starts a socket-activated service:
// the listeners as fds 3, 4, … with LISTEN_FDS and LISTEN_FDNAMES, and a
// NOTIFY_SOCKET of its own on which READY=1 marks it ready. LISTEN_PID
// must be the worker's own pid, unknown before fork: the master forks its
// own binary, whose ExecShim sets the variable and execs the command,
// keeping the pid. Forks happen on one goroutine locked to its thread (the
// thread's exit would fire every worker's Pdeathsig), and one loop reaps
// every child, orphans too when the master is pid 1.
//
// Reload starts a new generation on probation from the command as it is
// on disk now. If every new worker becomes ready, the old generation is
// retired one worker at a time (stop signal, drain, SIGKILL after the
// drain timeout); if any fails, the new generation is stopped and the old
// one serves on, untouched. One rollover runs at a time; requests made
// meanwhile coalesce into one follow-up.
package workers
