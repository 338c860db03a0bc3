// Package history keeps the master's recent events: reloads with their
// outcome, reason and duration, workers restarted (by reason, with slot,
// generation and pid), killed, recycled or replaced as hung, workers
// steered away from, master upgrades, and when each generation served.
//
// It is fed the supervisor's lifecycle events (workers.Event, each with
// a full status) through Observe and derives its entries by comparing
// each status with the one before: a restart is a rise of one of
// Counters.Restarts, matched to the slot whose worker's pid went away; a
// reload is the ReloadResult an EventReloaded carries. Nothing is asked
// of the supervisor.
//
// Memory is bounded: a ring of the last Size entries (and of the last
// few generations). Every entry has a sequence number, increasing from
// 1, so a client that saw up to N asks for Since(N) and learns, if the
// ring has moved past N+1, that it missed some. A History is safe for
// one writer (Observe, on the supervisor's goroutine) and any number of
// concurrent readers; Changed lets readers wait for a new entry without
// polling.
//
// A master upgrade carries the recent past to the new master: HandOver
// encodes the last reload and the newest entries (at most
// MaxHandedEntries, MaxHandedBytes in all) as a versioned record that
// rides in the hand-over message, and the new master restores them
// (DecodeHanded, Restore) before its own "took-over" entry. The record
// comes from another process, perhaps another version: a record of
// another version, beyond the bounds, or with an entry no History makes
// is refused whole, and the new master starts with an empty history.
package history
