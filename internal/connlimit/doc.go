// Package connlimit bounds the connections a server holds, for the
// master's control socket (control) and its admin endpoint (admin). It is
// handoff's own package, not a stable library API.
//
// A Limiter counts connections against a cap. A connection is idle from
// its admission until its request is complete (Busy), and again when a
// server that keeps connections alive has answered it (Idle). At the cap,
// Admit takes the place of the connection idle the longest: that one is
// evicted (the Limiter calls the evict function it was made with, which
// closes it or makes its pending read fail) and no longer counts, and
// the new one takes its place. Clients that connect and send nothing, or
// keep-alive connections left open, therefore never keep out a request:
// the owner's commands on the control socket, a load balancer's probes on
// the admin endpoint. Only when every connection held has a request in
// hand does Admit refuse; the caller then answers "busy" at once
// (control) or waits for Changed and tries again (admin), each request
// being bounded by its server's timeouts.
//
// Memory is bounded by the cap: the Limiter keeps one small record per
// held connection, and an evicted one is forgotten at once. The caller
// bounds what an evicted connection still costs while it winds down (a
// goroutine writing one short reply).
package connlimit
