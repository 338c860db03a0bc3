// Package control serves the master's control socket and is its client.
// It is part of handoff, not a stable library API.
//
// The protocol is one JSON request line and one JSON response line per
// connection: {"cmd":"status"}, {"cmd":"reload","wait":true},
// {"cmd":"stop"} or {"cmd":"scale","workers":N}, answered with
// {"ok":bool,"error":"…","result":{…}}. The socket is mode 0600 and every
// peer is checked with SO_PEERCRED: only root and the master's own user
// are served. Requests that are malformed, truncated or larger than
// MaxRequest get an error reply and a log line (at most one a second of
// each kind, counting those held back); they never disturb the master.
//
// The server handles at most MaxConns connections at once and accepts
// the next only when one is done: clients beyond that wait in the
// socket's listen backlog, which costs the master nothing, so idle or
// slow clients cannot grow its memory. A client that sends nothing is
// answered after 5 seconds.
//
// WaitExit is how 'handoff stop --wait' waits for the master: on a
// pidfd, which also sees a zombie exit.
package control
