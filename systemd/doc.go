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
//
// Fd store: FdStore keeps the master's listening sockets in systemd's
// file descriptor store (FDSTORE=1 with one descriptor and its FDNAME=
// per datagram, sent with our own sendmsg and SCM_RIGHTS:
// go-systemd's daemon package sends no descriptors), removes them
// (FDSTOREREMOVE=1) and waits for systemd to have read everything sent
// (BARRIER=1). When systemd restarts a crashed master it passes them
// back in LISTEN_FDS, where SplitStored tells them from a .socket
// unit's by their names: StoreName encodes listener, kind, slot and
// bank as "handoff.s.SLOT.BANK.NAME" and the like, one name per
// descriptor (systemd's order among descriptors sharing a name is not
// part of its interface), and ParseStoreName accepts exactly what
// StoreName.FDName writes. systemd keeps nothing unless the unit sets
// FileDescriptorStoreMax=, and does not tell the sender when it drops a
// descriptor; systemd 254 and later say the limit in $FDSTORE (Max).
package systemd
