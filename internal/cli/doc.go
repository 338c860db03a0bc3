// Package cli is handoff's command line: the cobra command tree (run,
// reload, status, stop, scale, top, check, completion, version, help),
// the client side of the control socket, and the exit codes.
//
// Main is all that main.go calls. 'handoff run' parses its flags once,
// with the flag set cobra built from config.Keys, merges the ones given
// over the --config file with config.Load, and hands the options to
// master.Run; nothing parses them twice. The client commands send one
// request on the control socket each (package control) and print the
// answer for a terminal, a pipe or --json, escaping what the master
// reports so that no worker's text can drive the terminal.
//
// Exit codes: 0 done; 1 a runtime error; 2 a usage error; status follows
// systemctl is-active (0 serving, 3 not serving, 1 no master); reload
// --wait gives 1 for a rollback and 124 when it stopped waiting while the
// reload goes on. A rollback's error is followed by the last lines the
// worker that failed it wrote to stderr, one "handoff: " line each (or,
// when the master did not read its stderr, where its output went).
//
// It is not an API: the command line is, and README.md documents it.
package cli
