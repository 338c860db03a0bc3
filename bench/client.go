package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// The bench's own HTTP/1.1 client, for what neither wrk nor vegeta can
// do: choose the client address of each connection (127.0.0.2–17, so
// that sticky balancing has several clients to spread), hold connections
// open while counting which worker each one reached, and make a new
// connection per request at saturation with the server closing first.

// clientAddrs is how many client addresses the bench's client uses:
// 127.0.0.2 to 127.0.0.17 (all of 127.0.0.0/8 is the loopback).
const clientAddrs = 16

// clientAddr is the i-th client address, cycling over clientAddrs.
func clientAddr(i int) net.IP {
	return net.IPv4(127, 0, 0, byte(2+i%clientAddrs))
}

// requestTimeout bounds one request of the bench's client, dial to last
// byte, so that a stuck server cannot hang a part.
const requestTimeout = 10 * time.Second

// hconn is one connection of the bench's client.
type hconn struct {
	c net.Conn
	r *bufio.Reader
	// deadline, if set, bounds everything on the connection (else each
	// request gets requestTimeout from its start).
	deadline time.Time
}

// dialFrom connects to addr from the client address src.
func dialFrom(ctx context.Context, src net.IP, addr string) (*hconn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: requestTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &hconn{c: c, r: bufio.NewReaderSize(c, 1024)}, nil
}

var (
	reqKeepAlive = []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	reqClose     = []byte("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
)

// get sends one GET / and parses the answer. With last, it asks the
// server to close the connection after answering, and waits until it
// has (so that the server, not the client, holds the closed
// connection's TIME_WAIT, as with any client that lets the server close:
// the client's ports are free again at once).
func (h *hconn) get(last bool) (answer, error) {
	req := reqKeepAlive
	if last {
		req = reqClose
	}
	if err := h.send(req); err != nil {
		return answer{}, err
	}
	return h.answer(last)
}

// request is a GET of path, as get sends it.
func request(path string, last bool) []byte {
	if last {
		return []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	}
	return []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n")
}

// send sets the connection's deadline and writes req.
func (h *hconn) send(req []byte) error {
	d := h.deadline
	if d.IsZero() {
		d = time.Now().Add(requestTimeout)
	}
	if err := h.c.SetDeadline(d); err != nil {
		return err
	}
	_, err := h.c.Write(req)
	return err
}

// answer reads the response to what send sent and parses it; with last,
// it then waits for the server's close (see get).
func (h *hconn) answer(last bool) (answer, error) {
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return answer{}, err
	}
	var buf [256]byte
	n, err := io.ReadFull(resp.Body, buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		resp.Body.Close()
		return answer{}, err
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		resp.Body.Close()
		return answer{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	a, ok := parseAnswer(buf[:n])
	if !ok {
		return answer{}, fmt.Errorf("malformed answer %q", buf[:n])
	}
	if last {
		// The server's FIN follows the answer.
		if _, err := h.r.Discard(1); !errors.Is(err, io.EOF) {
			return a, fmt.Errorf("server did not close the connection after Connection: close (%v)", err)
		}
	}
	return a, nil
}

func (h *hconn) close() { h.c.Close() }

// burst opens n connections to addr at once, from the client addresses
// in turn (connection i from clientAddr(i)), and only once all are open
// sends one request on each: connections that arrive together, the way
// keep-alive clients reconnect after a restart. It returns how many
// connections each pid answered.
func burst(ctx context.Context, addr string, n int) (map[int]int, error) {
	conns := make([]*hconn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			conns[i], errs[i] = dialFrom(ctx, clientAddr(i), addr)
		}()
	}
	close(start)
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("burst of %d connections: %w", n, err)
	}
	per := map[int]int{}
	for i, c := range conns {
		a, err := c.get(false)
		if err != nil {
			return nil, fmt.Errorf("burst: connection %d: %w", i+1, err)
		}
		per[a.PID]++
	}
	return per, nil
}

// stickyRun makes perAddr new connections from each of the client
// addresses, the addresses side by side and each one's connections one
// after the other, one request each, and counts who answered.
func stickyRun(ctx context.Context, addr string, perAddr int) (addrCounts, error) {
	out := addrCounts{}
	var mu sync.Mutex
	errs := make([]error, clientAddrs)
	var wg sync.WaitGroup
	for i := range clientAddrs {
		src := clientAddr(i)
		per := map[int]int{}
		out[src.String()] = per
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perAddr {
				if ctx.Err() != nil {
					errs[i] = ctx.Err()
					return
				}
				c, err := dialFrom(ctx, src, addr)
				if err != nil {
					errs[i] = fmt.Errorf("from %s: %w", src, err)
					return
				}
				a, err := c.get(true)
				c.close()
				if err != nil {
					errs[i] = fmt.Errorf("from %s: %w", src, err)
					return
				}
				mu.Lock()
				per[a.PID]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// connLoad is a closed-loop load at saturation with a new connection per
// request: clients goroutines, client i from clientAddr(i), each
// connecting, sending one request with `Connection: close`, reading the
// answer and the server's close, and starting over, for d. Every error
// counts as a failed request; nothing is retried.
func connLoad(ctx context.Context, addr string, clients int, d time.Duration) (loadResult, error) {
	type tally struct {
		ok, failed int64
		errs       map[string]int64
		perPID     map[int]int64
		lat        []time.Duration
	}
	tallies := make([]tally, clients)
	t0 := time.Now()
	end := t0.Add(d)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := &tallies[i]
			t.errs, t.perPID = map[string]int64{}, map[int]int64{}
			src := clientAddr(i)
			for ctx.Err() == nil {
				s := time.Now()
				if s.After(end) {
					return
				}
				a, err := func() (answer, error) {
					c, err := dialFrom(ctx, src, addr)
					if err != nil {
						return answer{}, err
					}
					defer c.close()
					return c.get(true)
				}()
				if err != nil {
					t.failed++
					t.errs[classifyError(err.Error(), 0)]++
					continue
				}
				t.ok++
				t.perPID[a.PID]++
				if len(t.lat) < maxLatencySamples {
					t.lat = append(t.lat, time.Since(s))
				}
			}
		}()
	}
	wg.Wait()
	r := loadResult{Tool: "bench client", Duration: time.Since(t0), Errors: map[string]int64{}, PerPID: map[int]int64{}}
	var lat []time.Duration
	for _, t := range tallies {
		r.Requests += t.ok + t.failed
		r.Failed += t.failed
		for k, v := range t.errs {
			r.Errors[k] += v
		}
		for k, v := range t.perPID {
			r.PerPID[k] += v
		}
		lat = append(lat, t.lat...)
	}
	if r.Duration > 0 {
		r.RPS = float64(r.Requests-r.Failed) / r.Duration.Seconds()
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		r.P50, r.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	return r, nil
}

// maxLatencySamples bounds the latencies one client of connLoad keeps.
const maxLatencySamples = 1 << 16
