// Package control serves the master's control socket and is its client.
//
// The protocol is one JSON request line and one JSON response line per
// connection: {"cmd":"status"}, {"cmd":"reload","wait":true} or
// {"cmd":"stop"}, answered with {"ok":bool,"error":"…","result":{…}}.
// The socket is mode 0600 and every peer is checked with SO_PEERCRED:
// only root and the master's own user are served. Requests that are
// malformed, truncated or larger than MaxRequest get an error reply and a
// log line; they never disturb the master.
package control
