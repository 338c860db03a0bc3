package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// Source is what the endpoint reads: the supervisor. *workers.Supervisor
// implements it.
type Source interface {
	// Status returns a snapshot of the master.
	Status() workers.Status
	// Alive returns nil once the supervision loop has answered, or an
	// error when ctx ends first.
	Alive(ctx context.Context) error
}

// Defaults for Options.
const (
	DefaultAliveTimeout  = 2 * time.Second
	DefaultStatusTimeout = 5 * time.Second
	DefaultMaxConns      = 32
)

// HTTP server bounds.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 30 * time.Second
	maxHeaderBytes    = 16 << 10
	// drainWait bounds how long the connections in hand may take to
	// finish once the endpoint stops: a new one has readHeaderTimeout to
	// send its request, which then waits at most StatusTimeout.
	drainWait = 12 * time.Second
	// errorLogEvery is the least time between two lines of the HTTP
	// server's own error log.
	errorLogEvery = 10 * time.Second
)

// Options tune a Server. The zero value is the default.
type Options struct {
	// Inherited says the listener came from a previous master, which
	// still serves on it: the server accepts only from the first
	// EventServing on (see the package doc).
	Inherited bool
	// SharedSockets maps the name of each shared (not steered) listener
	// to the master's descriptor of its socket, so /metrics can show its
	// accept queue. The descriptors must stay open while the server
	// runs. Unix sockets are not measured.
	SharedSockets map[string]int
	// Version is handoff's version, for handoff_master_info.
	Version string
	// AliveTimeout bounds /healthz's wait for the supervision loop.
	AliveTimeout time.Duration
	// StatusTimeout bounds a scrape's wait for a status snapshot.
	StatusTimeout time.Duration
	// LogLinesDropped, if set, reports how many lines the master's log
	// output has dropped (logsink.Writer.Dropped), for
	// handoff_log_lines_dropped_total.
	LogLinesDropped func() uint64
	// MaxConns caps the connections held at once. At the cap, a new
	// connection takes the place of the one idle the longest; it waits
	// only while every connection is in the middle of a request.
	MaxConns int
	// History, if set, is the master's event history, which its owner
	// feeds (History.Observe) and the status page shows. Unset, the
	// server keeps one of its own (history.DefaultSize entries), fed by
	// Observe.
	History *history.History
	// MaxWatchers caps the /events streams open at once (default
	// DefaultMaxWatchers); it must stay below MaxConns, which they
	// count against.
	MaxWatchers int
}

// Server is the admin endpoint. Create it with New, or Listen and
// FromListener; run it with Serve; feed it events with Observe.
type Server struct {
	src  Source
	log  hclog.Logger
	opts Options
	ln   *limitListener
	srv  *http.Server
	reg  *prometheus.Registry
	prom http.Handler
	ev   *eventMetrics

	hist     *history.History
	feedHist bool // the history is the server's own: Observe feeds it
	live     *live

	servingC  chan struct{} // closed at the first EventServing
	handoverC chan struct{} // closed at the hand-over to a new master

	mu    sync.Mutex
	state readiness
	snap  *snapshotCall // the status snapshot in flight, if any
}

// readiness is what /readyz decides on, kept from events.
type readiness struct {
	served     bool // a generation served
	stopping   bool
	handedOver bool
	generation int // the serving generation
	ready      int // workers ready, any generation
}

// snapshotCall is one Source.Status call, shared by the scrapes that
// wait for it.
type snapshotCall struct {
	done chan struct{}
	st   workers.Status
}

// Listen binds the admin endpoint's TCP address. Its error is one line
// naming the address.
func Listen(addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("admin endpoint %q: want HOST:PORT: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		// "address already in use", not "listen tcp …: bind: address
		// already in use": the address is named once.
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err
		}
		return nil, fmt.Errorf("admin endpoint: cannot listen on %s: %w", addr, err)
	}
	return ln, nil
}

// New binds addr at once (so an address in use is an error at start-up)
// and returns a server for it with default options.
func New(addr string, src Source, log hclog.Logger) (*Server, error) {
	ln, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	return FromListener(ln, src, log, Options{}), nil
}

// FromListener returns a server on ln: one from Listen, or handed over
// by a previous master (then set opts.Inherited). The server owns ln.
func FromListener(ln net.Listener, src Source, log hclog.Logger, opts Options) *Server {
	if opts.AliveTimeout <= 0 {
		opts.AliveTimeout = DefaultAliveTimeout
	}
	if opts.StatusTimeout <= 0 {
		opts.StatusTimeout = DefaultStatusTimeout
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.MaxWatchers > opts.MaxConns/2 {
		// Streams are never idle, so never evicted: leave the probes
		// room.
		opts.MaxWatchers = max(1, opts.MaxConns/2)
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Server{
		src:       src,
		log:       log,
		opts:      opts,
		ln:        newLimitListener(ln, opts.MaxConns),
		reg:       prometheus.NewRegistry(),
		ev:        newEventMetrics(),
		servingC:  make(chan struct{}),
		handoverC: make(chan struct{}),
		hist:      opts.History,
	}
	if s.hist == nil {
		s.hist, s.feedHist = history.New(history.DefaultSize), true
	}
	s.live = newLive(s, s.hist, opts.MaxWatchers)
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newStatusCollector(s),
		s.ev,
	)
	s.reg.MustRegister(s.counterFuncs()...)
	errLog := newRateLog(log, errorLogEvery)
	s.prom = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:          errLog,
		ErrorHandling:     promhttp.HTTPErrorOnError,
		EnableOpenMetrics: true,
	})
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog.std(),
		// The listener evicts idle connections at its cap: it learns
		// from these which are idle.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if lc, ok := c.(*limitConn); ok {
				return context.WithValue(ctx, connKey{}, lc)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if lc, ok := c.(*limitConn); ok && st == http.StateIdle {
				lc.lc.Idle()
			}
		},
	}
	return s
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx is done, or until this master hands
// over to a new one; then it stops accepting, lets the requests in
// progress finish (closing idle keep-alive connections at once), and
// returns. It closes the listener. An
// inherited listener (Options.Inherited) is not accepted on before the
// first generation serves.
func (s *Server) Serve(ctx context.Context) error {
	defer s.ln.Close()
	if s.opts.Inherited {
		select {
		case <-s.servingC:
		case <-s.handoverC:
		case <-ctx.Done():
		}
	}
	select {
	case <-s.handoverC:
		return nil
	case <-ctx.Done():
		return nil
	default:
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
	case <-s.handoverC:
	case err = <-errc:
		// The listener failed on its own (or was closed by a hand-over
		// that raced this select).
		select {
		case <-s.handoverC:
			err = nil
		default:
		}
		errc <- nil
	}
	s.drain()
	<-errc
	if err != nil {
		return fmt.Errorf("admin endpoint: %w", err)
	}
	return nil
}

// drain stops accepting and lets the connections in hand finish their
// request in progress, then closes what is left. Not http.Server's
// Shutdown: that drops, unanswered, a request it reads after it began
// (the client sees EOF), which at a hand-over is a scrape or probe that
// reached the old master an instant before it closed its listener.
func (s *Server) drain() {
	s.ln.Close()
	s.live.stop()                     // ends the /events streams
	s.srv.SetKeepAlivesEnabled(false) // closes idle connections; no more keep-alive
	t := time.NewTimer(drainWait)
	defer t.Stop()
	for s.ln.open() > 0 {
		select {
		case <-s.ln.conns.Changed():
		case <-t.C:
			s.srv.Close()
			return
		}
	}
	s.srv.Close()
}

// Observe takes a lifecycle event of the supervisor into account:
// readiness, the reload histograms, the history (unless
// Options.History is set: its owner feeds it) and the status page. It
// runs on the supervisor's goroutine and never blocks on the network.
func (s *Server) Observe(e workers.Event) {
	if s.feedHist {
		s.hist.Observe(e)
	}
	s.live.observe(e.Status)
	if e.Kind == workers.EventReloaded && e.Reload != nil {
		s.ev.reloaded(*e.Reload)
	}
	handOver := e.Kind == workers.EventHandedOver || e.Status.Phase == workers.MasterHandedOver
	s.mu.Lock()
	r := &s.state
	firstServing := false
	if e.Kind == workers.EventServing && !r.served {
		r.served, firstServing = true, true
	}
	if e.Kind == workers.EventStopping || e.Status.Phase == workers.MasterStopping {
		r.stopping = true
	}
	if e.Status.Serving {
		r.generation = e.Status.Generation
	}
	r.ready = 0
	for _, w := range e.Status.Workers {
		if w.State == workers.Ready {
			r.ready++
		}
	}
	newHandOver := handOver && !r.handedOver
	if handOver {
		r.handedOver = true
	}
	s.mu.Unlock()
	if firstServing {
		close(s.servingC)
	}
	if newHandOver {
		// The new master answers on this socket from now on: stop
		// accepting at once (Serve then ends the connections in hand).
		s.ln.Close()
		close(s.handoverC)
	}
}

// SetStopping makes /readyz answer 503 from now on: the master is about
// to stop its workers. Observe of EventStopping does the same.
func (s *Server) SetStopping() {
	s.mu.Lock()
	s.state.stopping = true
	s.mu.Unlock()
}

// ControlRequest counts a control-socket request: its command and
// whether it succeeded.
func (s *Server) ControlRequest(cmd string, ok bool) { s.ev.control(cmd, ok) }

// ready says whether /readyz answers 200, and why.
func (s *Server) ready() (bool, string) {
	s.mu.Lock()
	r := s.state
	s.mu.Unlock()
	switch {
	case r.handedOver:
		return false, "handed over to a new master"
	case r.stopping:
		return false, "stopping"
	case !r.served:
		return false, "no generation serves yet"
	case r.ready == 0:
		return false, "no worker is ready"
	}
	return true, fmt.Sprintf("generation %d serving, %d workers ready", r.generation, r.ready)
}

// ServeHTTP routes the endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if lc, ok := r.Context().Value(connKey{}).(*limitConn); ok {
		// A complete request header: no longer evictable until answered.
		lc.lc.Busy()
	}
	switch r.URL.Path {
	case "/metrics", "/healthz", "/readyz", "/", "/events":
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the admin endpoint only reads", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case "/":
		s.servePage(w, r)
	case "/events":
		s.serveEvents(w, r)
	case "/metrics":
		s.prom.ServeHTTP(w, r)
	case "/healthz":
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.AliveTimeout)
		defer cancel()
		if err := s.src.Alive(ctx); err != nil {
			plain(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		plain(w, http.StatusOK, "ok")
	case "/readyz":
		ok, why := s.ready()
		if !ok {
			plain(w, http.StatusServiceUnavailable, "not ready: "+why)
			return
		}
		plain(w, http.StatusOK, "ready: "+why)
	}
}

func plain(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, text)
}

// snapshot returns a status snapshot, waiting at most timeout. One call
// to the source is in flight at a time; callers meanwhile share it, so a
// wedged supervision loop holds one goroutine, not one per scrape.
func (s *Server) snapshot(timeout time.Duration) (workers.Status, error) {
	s.mu.Lock()
	c := s.snap
	if c == nil {
		c = &snapshotCall{done: make(chan struct{})}
		s.snap = c
		go func() {
			st := s.src.Status()
			s.mu.Lock()
			c.st = st
			s.snap = nil
			s.mu.Unlock()
			close(c.done)
		}()
	}
	s.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return c.st, nil
	case <-t.C:
		return workers.Status{}, fmt.Errorf("no status from the supervision loop within %s", timeout)
	}
}
