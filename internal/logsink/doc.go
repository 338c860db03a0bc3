// Package logsink keeps a failing log output from stopping the master.
//
// The master's log goes to its stderr: a terminal, a pipe into another
// program, journald's stream. Any of these can go away while the master
// runs (`handoff run … 2>&1 | head -2`, a restarted journald). Then a
// write fails (EPIPE, or EAGAIN on a non-blocking stream), and nothing
// about that may stop the master or its workers: it is not the master's
// job to die for its log reader. (That a write to fd 2 returns EPIPE at
// all rather than killing the process with SIGPIPE is up to the caller:
// a Go program must handle SIGPIPE with signal.Notify for that. Not
// signal.Ignore: an ignored signal stays ignored in every child.)
//
// A Writer wraps the output. Its Write never fails: while the output
// fails, it counts the lines it drops and keeps the last few of them
// (Options.Keep, each at most Options.MaxLine bytes), so its memory is
// bounded however long the output stays broken. At the first write that
// succeeds again, it writes a line saying how many lines were dropped
// (Options.Notice formats it), then the kept ones, then the line at
// hand. Dropped counts every line ever dropped, for a metric.
//
// It is handoff's own package, not a stable library API.
package logsink
