// Package systemd speaks systemd's protocols, in both directions. It is
// handoff's own package, not a stable library API.
//
// Out: Notifier sends the master's own state to systemd with sd_notify
// (READY=1, STATUS=, RELOADING=1 with MONOTONIC_USEC, STOPPING=1,
// MAINPID=, WATCHDOG=1), through github.com/coreos/go-systemd/v22/daemon.
//
// In: NotifySocket is the NOTIFY_SOCKET handoff gives each worker. One
// socket per worker means the socket itself says who spoke, so readiness
// reported by a helper process (systemd-notify in a shell script, which
// may exit before the master reads) is credited to the right worker and no
// worker can ready another. parseMessage accepts what systemd accepts and
// rejects the rest; datagrams still queued when a worker dies are read
// before its exit is judged.
//
// Activation: ActivationSockets takes the sockets systemd passes to the
// master itself (LISTEN_FDS), as raw descriptors.
package systemd
