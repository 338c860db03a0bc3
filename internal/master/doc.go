// Package master wires handoff's master process together: Run takes the
// options package config parsed and, in order, takes over or opens the
// control socket, the admin address and the listeners (upgrade.Master
// hands them from one master to the next), makes the supervisor
// (package workers), then serves the control socket and the admin
// endpoint and maps signals to actions until the supervisor's loop ends.
// A failure before the loop runs undoes every step, in reverse, and
// returns one error: nothing is left behind.
//
// The supervisor owns the generations and their workers; this package
// owns what outlives a generation: the listeners and the running
// options. Both change only in a reload's outcome (workers.ReloadRequest
// .Outcome, called once on the supervisor's goroutine whether or not a
// client still waits): a configuration reload opens the listeners it
// needs, and its outcome either commits them with the new options or
// closes what it opened. Configuration reloads take turns, and requests
// that arrive while one waits join it.
//
// Under systemd the master keeps its listening sockets in systemd's fd
// store (fdstore.go): every socket of every listener, both banks of a
// steered group and its eBPF selector, stored before the first worker
// starts and kept in step with the committed listeners (a reload's
// outcome, a group grown by scaling; a master that handed over stops
// touching it). A master that systemd restarts after a crash finds them
// in LISTEN_FDNAMES, rebuilds each listener from them (steer.Restore for
// a group), falls back to opening anew, with one log line, a listener
// whose kept sockets do not fit the configuration, and starts its first
// generation on the bank where the dead master's selector left
// connections waiting.
//
// The master keeps its recent past (past.go): the event history
// (internal/history, which the admin page and the status command show)
// and the last reload. A master upgrade hands both to the new master in
// the hand-over message, so its status does not start from nothing. The
// new master speaks to systemd only once the old one, still the unit's
// main process, has named it the main process (MAINPID=), as
// NotifyAccess=main requires; until then it neither notifies, pings
// the watchdog nor syncs the fd store (its predecessor stored the same
// sockets).
//
// The master's log goes through a log sink (internal/logsink) so that a
// reader that goes away never stops it.
//
// It is not an API.
package master
