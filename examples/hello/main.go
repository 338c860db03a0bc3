// Command hello is the example app for handoff: an HTTP server written for
// systemd socket activation, so it runs under handoff (or systemd)
// unchanged.
//
// It takes its listeners with go-systemd's activation package (or listens
// on -addr when started on its own), reports READY=1 with daemon.SdNotify,
// and drains gracefully on SIGTERM. Every answer names the process:
//
//	pid=1234 slot=0 generation=3 version=v2
//
// Build a version with: go build -ldflags "-X main.version=v2".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
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
	window := flag.Duration("close-window", 300*time.Millisecond, "on SIGTERM, keep serving this long with 'Connection: close' before shutting down")
	drain := flag.Duration("drain", 25*time.Second, "longest wait for in-flight requests after the window")
	flag.Parse()

	listeners, err := activation.Listeners()
	if err != nil {
		log.Fatalf("hello: socket activation: %v", err)
	}
	if len(listeners) == 0 {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			log.Fatalf("hello: %v", err)
		}
		listeners = []net.Listener{ln}
	}

	id := fmt.Sprintf("pid=%d slot=%s generation=%s version=%s\n",
		os.Getpid(), env("HANDOFF_WORKER"), env("HANDOFF_GENERATION"), version)
	var closing atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if closing.Load() {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, id)
	})
	// /sleep?d=2s answers after a delay: a slow request for drain tests.
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "want ?d=DURATION", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		if closing.Load() {
			w.Header().Set("Connection", "close")
		}
		fmt.Fprint(w, id)
	})
	conns := &connTracker{states: map[net.Conn]http.ConnState{}}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: conns.track}

	errc := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { errc <- srv.Serve(ln) }()
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Printf("hello: sd_notify: %v", err)
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sigc:
	case err := <-errc:
		log.Fatalf("hello: serve: %v", err)
	}

	// Drain, in an order that loses no request:
	//  1. Keep accepting and serving for a short window, telling every
	//     keep-alive client to close after its current request, so that
	//     none sends a request on a connection we are about to drop.
	//  2. Stop accepting: the socket is shared, so connections still in
	//     its queue go to the other workers.
	//  3. Wait until every Serve loop has returned (a connection its
	//     last Accept returned is tracked by then), then until every
	//     connection already accepted has had its request answered.
	//     http.Server.Shutdown alone would drop a connection accepted
	//     just before it whose request it reads just after: such a
	//     client gets EOF and no answer.
	//  4. Shutdown, which closes the idle keep-alive connections left.
	daemon.SdNotify(false, daemon.SdNotifyStopping)
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
		log.Printf("hello: shutdown: %v", err)
	}
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

// waitBusy waits until no connection is new (accepted, request not yet
// read) or active (request being served), or ctx is done.
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

func env(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return "-"
}
