//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load keeps strict clients busy against addr until stopped, and records
// every failure and, per request, the version that answered and when the
// request was sent.
type load struct {
	addr   string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	total atomic.Int64
	mu    sync.Mutex
	fails []string
	seen  []answer
}

type answer struct {
	sent    time.Time
	version string
	client  string
	body    string // for recordFrom's clients
}

// startLoad runs, for each kind, n clients: "new" opens a connection per
// request (Go client), "keepalive" reuses connections (Go client, which
// retries idempotent requests on a reused connection that fails), and
// "raw" reuses connections and never retries: every reset or short read
// is a failure.
func startLoad(addr string, n int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{addr: addr, cancel: cancel}
	for i := 0; i < n; i++ {
		l.run(ctx, "new", l.goClient(false))
		l.run(ctx, "keepalive", l.goClient(true))
		l.run(ctx, "raw", nil)
	}
	return l
}

// startStrictNew runs n clients that open a new connection for every
// request, from client addresses 127.0.0.2, 127.0.0.3, … (n distinct
// ones), send it with "Connection: close", and read the whole answer.
// They never retry: a refused or reset connection, a short read or any
// status but 200 is a failure.
func startStrictNew(addr string, n int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{addr: addr, cancel: cancel}
	for i := 0; i < n; i++ {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.strictNew(ctx, src)
		}()
	}
	return l
}

func (l *load) strictNew(ctx context.Context, src *net.TCPAddr) {
	req := []byte("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	d := net.Dialer{LocalAddr: src, Timeout: 30 * time.Second}
	client := "new from " + src.IP.String()
	for ctx.Err() == nil {
		sent := time.Now()
		c, err := d.Dial("tcp", l.addr)
		if err != nil {
			l.fail(client, err)
			continue
		}
		c.SetDeadline(sent.Add(30 * time.Second))
		_, err = c.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		}
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d: %q", resp.StatusCode, body)
			}
		}
		c.Close()
		if err != nil {
			l.fail(client, err)
			continue
		}
		l.recordFrom(client, sent, string(body))
	}
}

func (l *load) run(ctx context.Context, kind string, c *http.Client) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if c == nil {
			l.rawClient(ctx)
			return
		}
		for ctx.Err() == nil {
			sent := time.Now()
			resp, err := c.Get("http://" + l.addr + "/")
			if err != nil {
				l.fail(kind, err)
				continue
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				l.fail(kind, fmt.Errorf("status %d, body %q, err %v", resp.StatusCode, body, err))
				continue
			}
			l.record(kind, sent, string(body))
		}
	}()
}

func (l *load) goClient(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1},
	}
}

// rawClient speaks HTTP/1.1 over one keep-alive connection at a time,
// like wrk: no retries; it reconnects only when the server says
// "Connection: close" or after a failure (which it counts).
func (l *load) rawClient(ctx context.Context) {
	var (
		conn net.Conn
		rd   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	for ctx.Err() == nil {
		if conn == nil {
			c, err := net.DialTimeout("tcp", l.addr, 30*time.Second)
			if err != nil {
				l.fail("raw", err)
				continue
			}
			conn, rd = c, bufio.NewReader(c)
		}
		sent := time.Now()
		conn.SetDeadline(sent.Add(30 * time.Second))
		_, err := conn.Write(req)
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(rd, nil)
		}
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err != nil {
			l.fail("raw", err)
			conn.Close()
			conn = nil
			continue
		}
		l.record("raw", sent, string(body))
		if resp.Close {
			conn.Close()
			conn = nil
		}
	}
}

func (l *load) record(client string, sent time.Time, body string) {
	l.total.Add(1)
	l.mu.Lock()
	l.seen = append(l.seen, answer{sent: sent, version: field(body, "version"), client: client})
	l.mu.Unlock()
}

// recordFrom records an answer with its whole body.
func (l *load) recordFrom(client string, sent time.Time, body string) {
	l.total.Add(1)
	l.mu.Lock()
	l.seen = append(l.seen, answer{sent: sent, version: field(body, "version"), client: client, body: body})
	l.mu.Unlock()
}

func (l *load) fail(client string, err error) {
	l.total.Add(1)
	l.mu.Lock()
	l.fails = append(l.fails, time.Now().Format("15:04:05.000000")+" "+client+": "+err.Error())
	l.mu.Unlock()
}

// answersAfter returns the answers to requests sent after t.
func (l *load) answersAfter(t time.Time) []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []answer
	for _, a := range l.seen {
		if a.sent.After(t) {
			out = append(out, a)
		}
	}
	return out
}

// failures returns the failures so far.
func (l *load) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.fails)
}

// stop ends the load and returns its failures.
func (l *load) stop() []string {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fails
}

// waitRequests waits until at least n more requests have completed, so a
// test knows the load really runs.
func (l *load) waitRequests(n int64, timeout time.Duration) bool {
	target := l.total.Load() + n
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l.total.Load() >= target {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// staleAfter returns answers to requests sent after t that did not come
// from version want.
func (l *load) staleAfter(t time.Time, want string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.seen {
		if a.sent.After(t) && a.version != want {
			out = append(out, fmt.Sprintf("%s client got %s at +%s", a.client, a.version, a.sent.Sub(t)))
		}
	}
	return out
}

func summarize(fails []string) string {
	if len(fails) > 10 {
		return strings.Join(fails[:10], "\n") + fmt.Sprintf("\n… and %d more", len(fails)-10)
	}
	return strings.Join(fails, "\n")
}
