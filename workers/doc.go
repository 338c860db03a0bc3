// Package workers runs generations of worker processes for handoff's
// master. It is handoff's own package, not a stable library API.
//
// # One loop
//
// A Supervisor's state (generations, slots, workers, the operation under
// way, the master's phase) belongs to one goroutine, Run's, as
// tableflip's run loop owns its upgrader, and the loop is built the way
// Kubernetes controllers are: handlers record facts, one step acts on
// them.
//
//	          facts                        actions
//	notify datagram ─┐                 ┌─ start a worker (starter)
//	process exited  ─┤   ┌──────────┐  ├─ signal, kill a tree
//	timer fired     ─┼──▶│ handlers │  ├─ steer a group's sockets
//	probe / drain   ─┤   └────┬─────┘  ├─ answer a waiter (Outcome)
//	request, client ─┘        │ facts  └─ emit an event (systemd, admin)
//	                     ┌────▼─────┐
//	                     │  settle  │──▶ advance the operation, restart
//	                     └──────────┘    or back off slots, resteer once
//
// Everything outside reaches the loop through env (loop.go): datagrams
// and exits are posted by a watcher goroutine per worker, timers and
// blocking work (probes, drain waits, memory samples, a master upgrade)
// come back as posted functions. The loop never sleeps, never blocks and
// reads no clock but env's, so the simulator (sim_test.go) runs the same
// code on one goroutine under a seeded clock, and every schedule replays
// exactly from its seed.
//
// # States and transitions
//
// Every state machine has one transition function, which logs why, and a
// table of the moves it allows; any other move is refused (logged at
// error level, counted, and a failure under the simulator), as
// containerd's shim refuses what a state does not allow.
//
//	machine     from           allowed to
//	worker      starting       ready, draining, exited
//	            ready          draining, exited
//	            draining       exited
//	            exited         gone (no process of its tree is left)
//	slot        empty          starting, ready, backoff, retired
//	            starting       ready, empty, retired
//	            ready          passed, recycling, empty, retired
//	            passed         recycling, empty, retired
//	            recycling      ready, starting, retired
//	            backoff        starting, empty, retired
//	            retired        empty, starting, ready        (a rolling rollback)
//	generation  starting       serving, retiring            (the first one)
//	            probation      serving, retiring            (a reload's)
//	            serving        retiring
//	            retiring       gone
//	reload      (new)          starting, upgrading master, done
//	            starting       probation, retiring, rolling back, done
//	            probation      retiring, rolling back, done
//	            retiring       starting (rolling: next slot), rolling back, done
//	            rolling back   done
//	            upgrading      done
//	master      starting       serving, upgrading, stopping
//	            serving        upgrading, stopping
//	            upgrading      serving, starting, handed over, stopping
//	            handed over    stopping
//
// A slot (slot.go) is one position of a generation: empty (no worker,
// none scheduled: before its first start, or between its worker's exit
// and the restart policy's verdict), starting, ready, passed (a rolling
// reload's slot past probation, which takes connections while its
// generation is still on probation), recycling (its ready worker serves
// while a replacement starts), backoff (a restart scheduled) or retired
// (it runs no more workers; a rolling reload's rollback may give it back
// the worker it was retiring, or start one). A generation counts its
// ready and its not retired slots from these phases.
//
// One operation runs at a time (Supervisor.op): a reload or master
// upgrade (rollover.go), a change of the worker count (scale.go) or the
// replacement of a worker above the memory limit; requests wait in a
// queue, and worker reloads waiting together coalesce into one (unless
// both bring a configuration: each configuration's outcome is its own).
//
// # Invariants
//
// The simulator checks these after every step of every schedule:
//
//  1. The steering targets of every steered listener are exactly the
//     sockets of the workers that may take connections: ready, not
//     retired, of the serving generation (or of a rolling reload's slot
//     that passed probation), the newest generation's in each slot. With
//     none such, the kernel keeps the previous choice.
//  2. A generation on probation gets no connection (but a rolling
//     reload's passed slots).
//  3. No slot runs two workers that were not told to stop, but while one
//     replaces the other (memory recycling).
//  4. Every listener a live worker holds is open in the master: what the
//     master keeps changes only through a reload's outcome
//     (ReloadRequest.Outcome), never because a client stopped waiting.
//  5. Every reload request gets exactly one answer, and it matches what
//     the supervisor did: ok means its generation serves (or the new
//     master does), failed means it does not.
//  6. No process the supervisor started is forgotten: every live one is
//     some slot's current, replacement or exiting worker.
//  7. Once faults stop, the service comes back to its full count, one
//     generation serving, nothing pending, whatever happened before
//     (after backoff): a failed reload leaves the previous generation
//     serving at full strength.
//  8. After SIGTERM or a hand-over, every process is gone, every waiter
//     answered, and Run returns.
//  9. No state machine is asked for a move its table refuses.
//  10. Every slot's phase agrees with its workers (starting: its worker
//     is starting; ready, passed: ready, with no replacement; recycling:
//     ready, with one; empty, backoff: none, and a restart scheduled only
//     in backoff), and each generation's counts of ready and of active
//     slots are those its slots' phases give.
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
// # A failed worker's last words
//
// Where the master reads workers' output anyway (Config.Output prefix or
// json: a pipe per stream, forwarded line by line), it keeps the last
// TailLines lines of each worker's stderr, each cut to TailBytes with
// control characters escaped (tail.go). When a worker's main process
// exits, its watcher waits for the end of its stderr (at most tailWait: a
// helper may hold the pipe) before the exit is judged, so the lines
// written just before it died are there. A reload that a new worker's end
// fails carries them in its outcome (ReloadResult.Stderr, with the
// worker's pid), and a slot's last exit in status does too
// (WorkerStatus.LastStderr).
//
// With inherit (handoff's default, auto, picks it when the master's
// stderr is the journal, else prefix), the master reads nothing: the
// worker's stderr is the master's own descriptor, and stays so.
// Interposing a pipe
// there would change what a worker's stderr is: under systemd a journald
// stream that attributes each line to the worker's own pid (_PID, and
// its cgroup), and a descriptor that outlives the master, where a pipe
// would break (EPIPE, SIGPIPE) for workers still draining when the master
// hands over to a new one or dies. The outcome then names the failed
// worker's pid instead (journalctl _PID=N finds its lines), and
// --worker-output prefix brings its last lines into the outcome.
//
// The operating system is behind the starter interface (starter.go) and
// env (loop.go): tests run the supervisor on simulated processes,
// in-process and fast, besides the end-to-end tests that run real ones.
//
// # The simulator
//
// sim_test.go runs the real supervisor (only the starter, the clock and
// the steered groups are simulated) through seeded schedules that inject
// faults in random orders: crashes before and after READY, hangs on the
// stop signal, leftover helpers, kill -9 and kill storms, fork failures,
// broken releases, configuration reloads that add and remove listeners and
// change the count, master upgrades that succeed, fail or hand over,
// scaling, memory recycling, clients that stop waiting, and SIGTERM in
// the middle of any of it. A failing seed prints one line that replays it
// with its trace:
//
//	go test ./workers -run 'TestSimulate$' -sim.seed N -sim.steps K -v
//
// go test runs 10,000 schedules (2,000 with -short, a quarter under the
// race detector); HANDOFF_SIM_SOAK=N runs N.
package workers
