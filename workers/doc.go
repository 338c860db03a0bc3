// Package workers runs generations of worker processes for handoff's
// master. It is handoff's own package, not a stable library API.
//
// # One owner
//
// A Supervisor's state (generations, slots, the reload under way, the
// master's phase) belongs to one goroutine, Run's, as tableflip's run loop
// owns its upgrader. Everything else reports to it by posting a function:
// a worker that became ready or exited, a timer that fired, a caller's
// Reload, Status or Kill. It alone decides restarts, backoff, a reload's
// probation, commit, rollback and retirement, so no decision races
// another, and every phase has one transition function that logs why:
//
//   - a worker (worker.run, worker.transition): starting → ready →
//     draining → exited; then, once no process of its tree is left, gone;
//   - a generation (generation.transition): starting → serving (the
//     first one) or probation → serving (a reload's), then retiring →
//     gone; probation → retiring when its reload fails;
//   - a reload (rollover.transition): starting → probation → retiring →
//     done, once per slot with the rolling strategy; rolling back → done
//     on failure; upgrading master → done for a master self-upgrade;
//   - the master (Supervisor.setPhase): starting → serving → stopping, or
//     through upgrading back to serving, or to handed over.
//
// # Rules
//
// Ready is not healthy: a reload's new generation stays on probation,
// with the old one serving, until every new worker has stayed up
// Config.MinUptime after READY=1. Any new worker exiting before then
// fails the reload: the new generation is stopped and (rolling) the old
// slots already retired start again.
//
// Outside kills are not crash loops (slot.go): a worker that exits before
// READY, or on its own within the minimum uptime after it, backs off
// (100 ms doubling to 30 s); a ready worker killed from outside (the OOM
// killer, kill -9) or one that served its minimum uptime is replaced at
// once. A kill storm therefore never backs a served generation off.
//
// A worker is its whole process tree: its cgroup where the master can
// make one (as root, or delegated by systemd), else its process group.
// The stop signal and SIGKILL go to the tree, and when the main process
// exits what is left of the tree gets the stop signal, then SIGKILL.
//
// # Processes
//
// A worker is started the way systemd starts a socket-activated service:
// the listeners as fds 3, 4, … with LISTEN_FDS and LISTEN_FDNAMES, and a
// NOTIFY_SOCKET of its own on which READY=1 marks it ready. LISTEN_PID
// must be the worker's own pid, unknown before fork: a static shim of a
// few hundred bytes (shim_linux.go) sets it and executes the command,
// keeping the pid. Forks happen on one goroutine locked to its thread
// (the thread's exit would fire every worker's Pdeathsig); each child is
// reaped when its pidfd, in the runtime's poller, says it exited, so
// reaping is linear in the number of workers. As pid 1 the master reaps
// orphans too.
//
// The operating system is behind the starter interface (starter.go):
// tests run the supervisor on simulated processes, in-process and fast,
// besides the end-to-end tests that run real ones.
package workers
