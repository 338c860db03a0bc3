// Package top is 'handoff top': a live view of a master's status, polled
// over its control socket, and the progress of a reload as 'handoff
// reload --wait' reports it.
//
// It is only a client: it asks for the status every interval, as
// 'handoff status --json' does, and derives the rest (CPU percentages
// from the CPU seconds of two polls, a reload's phases from what changed
// between them) on its own side. The events it lists are the master's
// own history, sent with the status (so they include what happened
// before top started); from an older master that sends none, top
// derives them from what changed between polls. A master that nobody
// watches pays nothing for it.
//
// On a terminal, Run draws the view with bubbletea; without one,
// RunPlain prints a plain snapshot every interval. Strings that come from
// the master (workers' STATUS= text, errors, listener names) pass through
// Options.Safe before they reach the terminal.
package top
