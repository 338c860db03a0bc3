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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

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

	// Drain. Keep accepting and serving for a short window, telling every
	// keep-alive client to close after its current request, so that none
	// sends a request on a connection we are about to drop. Only then
	// shut down, which closes idle connections at once.
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	closing.Store(true)
	time.Sleep(*window)
	ctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Printf("hello: shutdown: %v", err)
	}
}

func env(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return "-"
}
