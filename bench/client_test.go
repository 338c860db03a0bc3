package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The bench's client against a real server on 127.0.0.1 that answers,
// in examples/hello's format, with a pid made of the client address's
// last byte: each address is its own "worker".
func TestClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host).To4()
		fmt.Fprintf(w, "pid=%d slot=0 generation=1 version=test\n", int(ip[3]))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	per, err := burst(t.Context(), addr, 64)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmtCounts(perWorker(per, clientAddrs)); got != strings.TrimSuffix(strings.Repeat("4 / ", clientAddrs), " / ") {
		t.Errorf("burst of 64 from %d addresses: %s per address", clientAddrs, got)
	}
	if per[2] != 4 || per[17] != 4 {
		t.Errorf("burst: client addresses are not 127.0.0.2–17: %v", per)
	}

	counts, err := stickyRun(t.Context(), addr, 5)
	if err != nil {
		t.Fatal(err)
	}
	if all, worst := stickyShare(counts); all != 1 || worst != 1 || len(counts) != clientAddrs {
		t.Errorf("stickyRun: share %v, worst %v, %d addresses", all, worst, len(counts))
	}
	if counts["127.0.0.9"][9] != 5 {
		t.Errorf("stickyRun: 127.0.0.9 got %v", counts["127.0.0.9"])
	}

	r, err := connLoad(t.Context(), addr, 8, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 0 || r.Requests == 0 || r.RPS <= 0 || r.P99 < r.P50 || r.P50 <= 0 {
		t.Errorf("connLoad: %+v", r)
	}
	// 8 clients: addresses 127.0.0.2–9 only.
	if len(r.PerPID) != 8 || r.PerPID[10] != 0 {
		t.Errorf("connLoad answers by address: %v", r.PerPID)
	}

	// A server that does not close after Connection: close is an error:
	// the load would not be a new connection per request.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.Read(buf)
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npid=1\nextra")
				time.Sleep(time.Second)
			}()
		}
	}()
	h, err := dialFrom(t.Context(), clientAddr(0), ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if _, err := h.get(true); err == nil || !strings.Contains(err.Error(), "did not close") {
		t.Errorf("get from a server that kept the connection: %v", err)
	}
}
