// Package upgrade owns the master's sockets: it binds them once, adopts
// them from systemd socket activation, and carries them across the
// master's own binary upgrades. It is handoff's own package, not a
// stable library API.
//
// A Listener is a socket the master holds for its whole life and never
// accepts on. Its descriptor is kept out of the Go runtime's poller (an
// os.File around a non-blocking socket would be registered, and every
// connection would wake the master) and nothing in the master depends on
// its O_NONBLOCK flag, which belongs to the open file description shared
// with every worker and which workers change at will.
//
// Bind refuses an address another socket holds with an error wrapping
// ErrAddressInUse that names the holder where /proc shows it (CheckFree
// does the same check for package steer before it builds a group).
//
// A unix socket's file gets its mode and owner before it appears at its
// path (BindUnix): it is bound in a private 0700 directory made next to
// the path, changed there through an O_PATH|O_NOFOLLOW descriptor (never
// through a symlink), and renamed into place with RENAME_NOREPLACE, which
// fails rather than replace what appeared there. A parent directory that
// every user may write without the sticky bit is refused. The kernel
// keeps the name the socket was bound with: getsockname on it (and the
// address its clients see as their peer) is the private directory's
// path, which no longer exists; use the configured path.
//
// Master wraps github.com/cloudflare/tableflip for self-upgrades. The new
// master is started by tableflip from the path this master was started
// as (StartedAs: argv[0] made absolute, symlinks not resolved), looked
// up again at each upgrade: with /opt/handoff/current flipped to a new
// release, the new master runs the new release. The new master is
// started by tableflip; the listeners travel to it as raw
// SCM_RIGHTS descriptors on a socketpair (one end handed over through
// tableflip), with the generation count, so the new master never wraps
// them in a pollable file either. The control socket travels as a
// tableflip listener and is never unlinked on a hand-over. Steered socket
// groups (package steer) travel the same way as the listeners, as their
// descriptors and an opaque state, in messages of at most 250
// descriptors, with each slot's bank. The new master checks the message
// before it trusts it (it may come from another version of handoff): a
// negative or oversized descriptor count, a name given twice, a bank
// other than 0 or 1, or a count that does not match the descriptors
// received fails the upgrade with an error, and the old master serves
// on. The first message may also carry the runner's own state for its
// successor (Handover.State: the last reload and recent events), a JSON
// value of at most MaxStateSize bytes that this package passes on
// unread (InheritedState) and refuses when larger; its reader checks
// and versions it (internal/history.DecodeHanded). The new master calls Ready once its own workers are ready; the old
// one then retires its workers and exits.
package upgrade
