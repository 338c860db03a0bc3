// Command testapp is a worker for handoff's tests. It behaves as -mode
// says, so tests can make workers that are well-behaved, broken or odd.
//
//	serve        HTTP on fd 3 (net/http), READY=1, drain on SIGTERM
//	cstyle       HTTP on fd 3 with poll(2) + accept(2) on the raw fd, as a C
//	             server would; slot 1, 3, … use it with -mode mixed
//	mixed        serve in even slots, cstyle in odd ones
//	exit         exit 3 at once
//	never-ready  serve but never send READY=1
//	slot0-ready  only slot 0 sends READY=1 (many times)
//	garbage      send malformed datagrams, then READY=1, then serve
//	gate         serve; send READY=1 only once file -gate exists; on
//	             SIGTERM, exit only once file -gate-stop exists
//	ready-exit   send READY=1 without serving, exit 1 after -exit-after
//	             (gunicorn without --preload when the app fails to import)
//	hold         a helper: accept on fd 3 and never answer, ignoring
//	             SIGTERM (needs no LISTEN_PID of its own)
//	probe        serve; on SIGTERM, first GET -probe URL and write the
//	             answer's status code (or the error) to -probe-out.SLOT
//
// In every serving mode, GET /healthz answers 500 while the file
// -unhealthy.PID exists (PID the worker's), and a worker given
// WATCHDOG_USEC sends WATCHDOG=1 four times as often until the file
// -watchdog-stop.PID exists.
//
//	flood        serve, READY=1, then send notify datagrams (STATUS= and
//	             garbage) as fast as it can, for ever
//	alloc        serve; whenever file -gate appears, the one worker that
//	             removes it allocates -alloc bytes and touches every page
//	             (to be OOM-killed under a memory limit)
//
// Every HTTP answer is "pid=P slot=S generation=G version=V". GET
// /sleep?d=2s answers after d, setting STATUS=busy while it waits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var version = "test"

func main() {
	mode := flag.String("mode", "serve", "behaviour")
	gate := flag.String("gate", "", "file whose existence lets the worker become ready")
	gateStop := flag.String("gate-stop", "", "file whose existence lets the worker exit on SIGTERM")
	exitAfter := flag.Duration("exit-after", 300*time.Millisecond, "ready-exit: how long after READY=1 to exit")
	health := flag.Int("health-status", 200, "the status GET /healthz answers")
	probe := flag.String("probe", "", "probe: URL to GET on SIGTERM")
	probeOut := flag.String("probe-out", "", "probe: file (suffixed .SLOT) to write the probe's result to")
	allocSize := flag.String("alloc", "200MiB", "alloc: how much memory to allocate (B, KiB, MiB, GiB)")
	unhealthy := flag.String("unhealthy", "", "GET /healthz answers 500 while this file, suffixed .PID, exists")
	watchdogStop := flag.String("watchdog-stop", "", "stop sending WATCHDOG=1 once this file, suffixed .PID, exists")
	flag.Parse()
	unhealthyFile := ""
	if *unhealthy != "" {
		unhealthyFile = fmt.Sprintf("%s.%d", *unhealthy, os.Getpid())
	}

	slot, _ := strconv.Atoi(os.Getenv("HANDOFF_WORKER"))
	switch *mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "testapp: exiting at once, as asked")
		os.Exit(3)
	case "ready-exit":
		notify("READY=1")
		time.Sleep(*exitAfter)
		fmt.Fprintln(os.Stderr, "testapp: failing after READY=1, as asked")
		os.Exit(1)
	case "hold":
		hold()
	case "mixed":
		if slot%2 == 1 {
			*mode = "cstyle"
		} else {
			*mode = "serve"
		}
	}
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		fail("LISTEN_PID=%q, want my pid %d", os.Getenv("LISTEN_PID"), os.Getpid())
	}
	id := fmt.Sprintf("pid=%d slot=%s generation=%s version=%s mode=%s\n",
		os.Getpid(), os.Getenv("HANDOFF_WORKER"), os.Getenv("HANDOFF_GENERATION"), version, *mode)

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)

	if *mode == "cstyle" {
		go cstyle(id)
	} else {
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			fail("fd 3: %v", err)
		}
		srv := serve(ln, id, *health, unhealthyFile)
		defer srv.Shutdown(context.Background())
	}

	switch *mode {
	case "never-ready":
	case "slot0-ready":
		if slot == 0 {
			for i := 0; i < 20; i++ {
				notify("READY=1")
			}
		}
	case "garbage":
		notify("\x00\x01\x02binary\xff\xfe")
		notify("no equals sign here")
		notify(string(make([]byte, 10000)))
		notify("=empty key")
		notify("READY=1\nSTATUS=survived garbage")
	case "gate":
		waitFile(*gate)
		notify("READY=1")
	case "flood":
		notify("READY=1")
		go func() {
			for i := 0; ; i++ {
				if i%2 == 0 {
					notify(fmt.Sprintf("STATUS=flood %d", i))
				} else {
					notify("not an assignment")
				}
			}
		}()
	case "alloc":
		n, err := parseSize(*allocSize)
		if err != nil {
			fail("-alloc: %v", err)
		}
		notify("READY=1")
		go allocOnTrigger(*gate, n)
	default:
		notify("READY=1")
	}
	if us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		go func() {
			stop := fmt.Sprintf("%s.%d", *watchdogStop, os.Getpid())
			for {
				if _, err := os.Stat(stop); *watchdogStop != "" && err == nil {
					return
				}
				notify("WATCHDOG=1")
				time.Sleep(time.Duration(us) * time.Microsecond / 4)
			}
		}()
	}

	<-sigc
	if *mode == "probe" {
		writeProbe(*probe, fmt.Sprintf("%s.%d", *probeOut, slot))
	}
	if *mode == "gate" {
		notify("STATUS=draining, waiting for " + *gateStop)
		waitFile(*gateStop)
	}
}

// serve answers HTTP on ln; GET /healthz answers health, or 500 while
// the file unhealthyFile exists.
func serve(ln net.Listener, id string, health int, unhealthyFile string) *http.Server {
	var busy atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(unhealthyFile); unhealthyFile != "" && err == nil {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, id)
			return
		}
		w.WriteHeader(health)
		fmt.Fprint(w, id)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, id) })
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		notify(fmt.Sprintf("STATUS=busy %d", busy.Add(1)))
		time.Sleep(d)
		notify(fmt.Sprintf("STATUS=busy %d", busy.Add(-1)))
		fmt.Fprint(w, id)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	return srv
}

// cstyle serves HTTP the way a C server does: poll the listening fd, then
// accept, tolerating EAGAIN (another process won the race) whatever the
// socket's blocking mode, which other workers may have changed.
func cstyle(id string) {
	resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(id), id)
	for {
		fds := []unix.PollFd{{Fd: 3, Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			fail("poll: %v", err)
		}
		nfd, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			fail("accept: %v", err)
		}
		go func() {
			defer unix.Close(nfd)
			buf := make([]byte, 4096)
			var req []byte
			for !containsEnd(req) {
				n, err := unix.Read(nfd, buf)
				if n <= 0 || err != nil {
					return
				}
				req = append(req, buf[:n]...)
			}
			unix.Write(nfd, []byte(resp))
		}()
	}
}

// hold accepts connections on fd 3 and never answers them, as an orphan
// that inherited a listening socket does.
func hold() {
	signal.Ignore(syscall.SIGTERM)
	var held []int
	for {
		nfd, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				unix.Poll([]unix.PollFd{{Fd: 3, Events: unix.POLLIN}}, -1)
			}
			continue
		}
		held = append(held, nfd)
	}
}

// writeProbe GETs url and writes the status code, or the error, to out.
func writeProbe(url, out string) {
	result := ""
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		result = "error: " + err.Error()
	} else {
		resp.Body.Close()
		result = strconv.Itoa(resp.StatusCode)
	}
	if err := os.WriteFile(out, []byte(result+"\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "testapp: probe: %v\n", err)
	}
}

// allocOnTrigger waits for file trigger; the worker whose remove of it
// succeeds (one, however many watch) allocates n bytes and writes to
// every page, so they count as resident. It keeps them.
func allocOnTrigger(trigger string, n int64) {
	var kept [][]byte
	for {
		waitFile(trigger)
		if os.Remove(trigger) != nil {
			continue // another worker took it
		}
		notify(fmt.Sprintf("STATUS=allocating %d bytes", n))
		const chunk = 1 << 20
		for left := n; left > 0; left -= chunk {
			b := make([]byte, min(left, chunk))
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			kept = append(kept, b)
		}
		held := 0
		for _, b := range kept {
			held += len(b)
		}
		notify(fmt.Sprintf("STATUS=holding %d bytes", held))
	}
}

// parseSize reads 200MiB, 1GiB, 4096.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(num, 10, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("bad size %q (want a number with B, KiB, MiB or GiB)", s)
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("bad size %q", s)
}

func containsEnd(b []byte) bool {
	for i := 0; i+3 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' && b[i+2] == '\r' && b[i+3] == '\n' {
			return true
		}
	}
	return false
}

func notify(msg string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		fail("notify: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		fmt.Fprintf(os.Stderr, "testapp: notify: %v\n", err)
	}
}

func waitFile(path string) {
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testapp: "+format+"\n", args...)
	os.Exit(1)
}
