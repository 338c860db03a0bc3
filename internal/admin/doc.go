// Package admin serves handoff's HTTP admin endpoint (--admin HOST:PORT):
// Prometheus metrics, a liveness probe, a readiness probe and a status
// page for people. It is handoff's own package, not a stable library
// API.
//
// # What it serves
//
//   - /metrics: the master's state in the Prometheus text format (or
//     OpenMetrics, by content negotiation).
//   - /healthz: 200 while the supervision loop answers (Source.Alive,
//     bounded by Options.AliveTimeout), 503 otherwise: a liveness probe.
//   - /readyz: 200 while this master serves (its first generation
//     served, it is not stopping, it has not handed over to a new
//     master, and at least one worker is ready); 503 otherwise: a
//     readiness probe, for a load balancer or Kubernetes.
//   - /: the status page (see below), HTML.
//   - /events: the status page's live feed, server-sent events.
//
// Everything else is 404, and any method but GET and HEAD is 405: the
// endpoint only reads. Reloads and stops stay on the control socket,
// whose peers are checked; this one has no authentication, so bind it
// to a loopback or otherwise private address.
//
// # Metrics
//
// Two kinds. The state of the master (workers by state and generation,
// the serving generation, restarts and reloads counted, each worker's
// memory and CPU, accept queues) comes from one workers.Status snapshot
// per scrape, taken by a custom prometheus.Collector that emits constant
// metrics: a scrape shows exactly what 'handoff status --json' would
// have shown at that moment, and nothing is kept between scrapes that
// could drift from it. Durations, which Status does not keep a history
// of, are real histograms fed by lifecycle events (Observe), as is the
// count of control requests (ControlRequest). Two counters are read
// from elsewhere at each scrape: the idle connections this endpoint
// evicted (see Bounds), and, when Options.LogLinesDropped is set, the
// lines the master's log output dropped while it failed
// (handoff_log_lines_dropped_total, from internal/logsink). The Go runtime and
// process collectors describe the master itself. Everything lives in a
// registry of the Server's own: no global state.
//
// A snapshot needs the supervision loop. A wedged loop must not hang
// scrapes or pile up goroutines: one snapshot at a time is in flight,
// concurrent scrapes share it, and a scrape waits for it at most
// Options.StatusTimeout, then fails with 500 (so Prometheus records the
// target as down while /healthz says why).
//
// # Readiness
//
// Readiness is kept from lifecycle events, not asked of the loop: it is
// a few fields behind a mutex, set on the supervisor's goroutine by
// Observe. EventStopping comes before any worker gets its stop signal,
// so /readyz answers 503 before the first worker starts draining
// (SetStopping does the same for a runner that knows earlier).
//
// # Bounds
//
// The HTTP server has header, read, write and idle timeouts and a cap on
// header size; the listener holds at most Options.MaxConns connections
// at a time. Idle connections must not starve the probes (a liveness
// probe that times out restarts the pod): at the cap, a new connection
// takes the place of the one idle the longest, one whose request header
// is not complete yet or a keep-alive connection between requests
// (handoff_admin_connections_evicted_total counts them). A connection
// whose request is being answered is never evicted; only when every
// connection held is, does a new one wait, for the first to be answered
// (each answer is bounded by the timeouts above). Memory and goroutines
// stay bounded by the cap whatever the number of clients. The count and
// the eviction are internal/connlimit's, which the control socket shares. A client that
// opens connections faster than a probe sends its request line can
// still crowd the probe out: bind the endpoint to a private address.
// Requests are not
// logged; the server's own errors (a client speaking TLS to it, say)
// are, at most one line per ten seconds with a count of those dropped.
//
// # Status page
//
// GET / is one HTML page, its style and script inline (go:embed, about
// 6 KB, nothing loaded from elsewhere; its Content-Security-Policy
// allows nothing else): the master (pid, version, phase), the serving
// generation, the generations that served (since when, for how long),
// the workers (slot, pid, generation, state and why it is steered away
// from, uptime, restarts, accept queue, memory), each steered
// listener's accept queue per slot over the last minute as a small SVG
// chart, and the history: reloads and master upgrades with their
// outcome, reason and duration, workers restarted, killed, recycled or
// replaced as hung, workers steered away from. The server renders it
// complete from a status snapshot (as a scrape takes one), so it reads
// without JavaScript; the script then follows /events and redraws the
// page in place.
//
// The history is internal/history's: Options.History when the runner
// keeps one (and feeds it), else the server's own, fed by Observe. It is
// derived from the events alone, so it holds what happened while the
// endpoint ran in this master (a new master after a self-upgrade starts
// an empty one).
//
// /events sends "status" messages (a JSON frame: the status, the
// generations, the queue charts) and "history" messages (entries after
// the one the client last saw: ?since=N, or Last-Event-ID on an
// EventSource's reconnection; at most 64 per message, and "missed" when
// the ring no longer holds some). Frames are made by one goroutine for
// all streams, only while at least one is open: at each event Observe
// passes on (its status, no call to the supervisor), and every second
// without one (a snapshot, for queues and memory, which move without
// events), at most one per 200 ms; a stream writes at most once per
// 200 ms. With no stream open nothing runs: Observe keeps the last
// status and returns. An open stream is a goroutine parked on channels
// and a connection, plus a comment line every 25 s; each write has a
// 10 s deadline, so a client that stops reading is dropped. At most
// Options.MaxWatchers streams are open (16 by default, never more than
// half of MaxConns, since a stream is never idle and so never evicted:
// the probes keep the other half); one more gets 503. Streams end when
// the endpoint stops or hands over, before it drains.
//
// # Across a master self-upgrade
//
// A TCP address held by a listening socket cannot be bound again
// without SO_REUSEPORT on both sockets, and the new master starts
// before the old one stops. So the admin listener travels with the
// others: the old master hands its socket to the new one (tableflip's
// Fds), and the two share it for a moment. The new master (created with
// Options.Inherited) does not accept on it until its own first
// generation serves; the old master stops accepting when it hands over
// (Observe of EventHandedOver closes its copy at once), closes its idle
// keep-alive connections and answers the requests it already accepted.
// So a probe never meets a master that is still starting while the
// other serves, and scrapes move to the new master without a refused
// connection. (Not http.Server.Shutdown: it answers nothing to a request
// it reads after it began, and a client that connected an instant
// before the hand-over would get EOF.)
//
// When the endpoint stops (ctx done, once the master's workers are
// gone) it ends its connections the same way.
package admin
