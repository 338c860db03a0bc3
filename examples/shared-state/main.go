// Command shared-state shows the trade-off of running a server as several
// worker processes: state kept in a worker's memory is that worker's alone.
// It counts requests per user two ways:
//
//	GET /memory?user=alice   a map in this process: each worker has its own
//	                         count, and a crash or a reload starts from 0
//	GET /redis?user=alice    INCR in Redis: one count, whichever worker
//	                         answers, across crashes, reloads and upgrades
//
// Each answer names the count and the process:
//
//	user=alice count=3 store=redis pid=1234 slot=0 generation=2 version=dev
//
// Run it under handoff with a Redis on a unix socket or TCP address:
//
//	handoff run --listen http=tcp://127.0.0.1:8080 -- \
//	    shared-state -redis unix:///run/redis/redis.sock
//
// It takes its listeners by socket activation (or listens on -addr), sends
// READY=1, and drains on SIGTERM like examples/hello. The Redis client is
// the few lines of RESP that INCR needs, so the example has no dependency.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

var version = "dev"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on when not started with LISTEN_FDS")
	redisURL := flag.String("redis", "", "Redis address: unix:///path/to/redis.sock or host:port (empty: /redis answers 503)")
	window := flag.Duration("close-window", 300*time.Millisecond, "on SIGTERM, keep serving this long with 'Connection: close' before shutting down")
	drain := flag.Duration("drain", 25*time.Second, "longest wait for in-flight requests after the window")
	flag.Parse()

	var store *redisStore
	if *redisURL != "" {
		var err error
		if store, err = newRedisStore(*redisURL); err != nil {
			log.Fatalf("shared-state: -redis: %v", err)
		}
	}
	listeners, err := activation.Listeners()
	if err != nil {
		log.Fatalf("shared-state: socket activation: %v", err)
	}
	if len(listeners) == 0 {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			log.Fatalf("shared-state: %v", err)
		}
		listeners = []net.Listener{ln}
	}

	who := fmt.Sprintf("pid=%d slot=%s generation=%s version=%s",
		os.Getpid(), env("HANDOFF_WORKER"), env("HANDOFF_GENERATION"), version)
	var (
		closing atomic.Bool
		mu      sync.Mutex
		counts  = map[string]int64{}
	)
	answer := func(w http.ResponseWriter, user string, n int64, kind string) {
		if closing.Load() {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprintf(w, "user=%s count=%d store=%s %s\n", user, n, kind, who)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/memory", func(w http.ResponseWriter, r *http.Request) {
		user, ok := userParam(w, r)
		if !ok {
			return
		}
		mu.Lock()
		counts[user]++
		n := counts[user]
		mu.Unlock()
		answer(w, user, n, "memory")
	})
	mux.HandleFunc("/redis", func(w http.ResponseWriter, r *http.Request) {
		if store == nil {
			http.Error(w, "started without -redis", http.StatusServiceUnavailable)
			return
		}
		user, ok := userParam(w, r)
		if !ok {
			return
		}
		n, err := store.incr(r.Context(), "count:"+user)
		if err != nil {
			log.Printf("shared-state: redis: %v", err)
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		answer(w, user, n, "redis")
	})

	conns := &connTracker{states: map[net.Conn]http.ConnState{}}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: conns.track}
	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { errc <- srv.Serve(ln) }()
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Printf("shared-state: sd_notify: %v", err)
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigc:
	case err := <-errc:
		log.Fatalf("shared-state: serve: %v", err)
	}
	// The drain of examples/hello: answer with 'Connection: close' for a
	// moment, stop accepting, wait for the Serve loops and for every
	// accepted connection to be answered, then close the idle ones.
	closing.Store(true)
	time.Sleep(*window)
	for _, ln := range listeners {
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	for range listeners {
		select {
		case <-errc:
		case <-ctx.Done():
		}
	}
	conns.waitBusy(ctx)
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
		log.Printf("shared-state: shutdown: %v", err)
	}
}

// redisStore is a small pool of Redis connections that knows one
// command, INCR.
type redisStore struct {
	network, addr string
	idle          chan *redisConn
}

type redisConn struct {
	net.Conn
	rd *bufio.Reader
}

func newRedisStore(url string) (*redisStore, error) {
	s := &redisStore{network: "tcp", addr: url, idle: make(chan *redisConn, 16)}
	if path, ok := strings.CutPrefix(url, "unix://"); ok {
		s.network, s.addr = "unix", path
	}
	if s.addr == "" {
		return nil, fmt.Errorf("%q: no address", url)
	}
	return s, nil
}

// incr increments key and returns its new value.
func (s *redisStore) incr(ctx context.Context, key string) (int64, error) {
	var c *redisConn
	select {
	case c = <-s.idle:
	default:
		d := net.Dialer{Timeout: 2 * time.Second}
		nc, err := d.DialContext(ctx, s.network, s.addr)
		if err != nil {
			return 0, err
		}
		c = &redisConn{Conn: nc, rd: bufio.NewReader(nc)}
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	n, err := c.incr(key)
	if err != nil {
		c.Close()
		return 0, fmt.Errorf("INCR %s: %w", key, err)
	}
	select {
	case s.idle <- c:
	default:
		c.Close()
	}
	return n, nil
}

func (c *redisConn) incr(key string) (int64, error) {
	if _, err := fmt.Fprintf(c, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return 0, err
	}
	line, err := c.rd.ReadString('\n')
	if err != nil {
		return 0, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, ":"):
		return strconv.ParseInt(line[1:], 10, 64)
	case strings.HasPrefix(line, "-"):
		return 0, errors.New(line[1:])
	}
	return 0, fmt.Errorf("unexpected reply %q", line)
}

// connTracker follows each connection's state, so the drain can wait for
// connections that were accepted but not yet answered.
type connTracker struct {
	mu     sync.Mutex
	states map[net.Conn]http.ConnState
}

func (t *connTracker) track(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(t.states, c)
	default:
		t.states[c] = s
	}
}

// waitBusy waits until no connection is new or active, or ctx is done.
func (t *connTracker) waitBusy(ctx context.Context) {
	for {
		t.mu.Lock()
		busy := 0
		for _, s := range t.states {
			if s == http.StateNew || s == http.StateActive {
				busy++
			}
		}
		t.mu.Unlock()
		if busy == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// userParam returns the user query parameter, or answers 400 when it is
// not 1 to 64 letters, digits, '-' or '_'.
func userParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	user := r.URL.Query().Get("user")
	ok := len(user) > 0 && len(user) <= 64
	for _, c := range user {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			ok = false
		}
	}
	if !ok {
		http.Error(w, "want ?user=NAME: 1 to 64 letters, digits, '-' or '_'", http.StatusBadRequest)
	}
	return user, ok
}

func env(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return "-"
}
