// Package control serves the master's control socket and is its client.
// It is part of handoff, not a stable library API.
//
// The protocol is one JSON request line and one JSON response line per
// connection: {"cmd":"status"}, {"cmd":"reload","wait":true},
// {"cmd":"stop"} or {"cmd":"scale","workers":N}, answered with
// {"ok":bool,"error":"…","result":{…}}. A request may carry only those
// keys, spelt exactly so (encoding/json alone would take "CMD" for
// "cmd"), and no key twice in any object: {"cmd":"status","cmd":"stop"}
// is refused, not read as its last key. ParseRequest is that check, and
// FuzzParseRequest fuzzes it.
//
// The socket is mode 0600 and every peer is checked with SO_PEERCRED:
// only root and the master's own user are served. Options.Refuse (see
// NewServer) may then turn away a peer by its pid, as the master does its
// own workers when they run with its uid. Requests that are malformed,
// truncated or larger than MaxRequest get an error reply and a log line
// (at most one a second of each kind, counting those held back); they
// never disturb the master.
//
// The server holds at most MaxConns connections. At the cap, a new
// connection evicts the oldest idle one (one that has not sent a
// complete request), which is told why; if every one has a request in
// hand, the new one is answered "busy" at once. So clients that connect
// and send nothing cannot keep the owner's commands out, and goroutines
// (at most 2*MaxConns, evicted ones winding down included) and buffers
// stay bounded. A client that sends nothing is answered after 5 seconds,
// or when the master stops serving. The count and the eviction are
// internal/connlimit's, which the admin endpoint shares.
//
// Where the socket lives: DefaultPath. The one default that another user
// could create first, $TMPDIR/handoff-EUID, is trusted by ListenUnix and
// Do only if CheckDir passes: a real directory (not a symlink) owned by
// the effective uid with no group or other permission bits. Otherwise
// each says so in one line naming the directory and the problem. Do
// reads at most MaxReply bytes of a reply.
//
// WaitExit is how 'handoff stop --wait' waits for the master: on a
// pidfd, which also sees a zombie exit.
package control
