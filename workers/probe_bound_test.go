package workers

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// probeServer serves one connection on 127.0.0.1: it reads the request
// header, then writes head and, if endless is set, endless without end,
// until the client goes. It returns the address and a channel that gets
// how many bytes it wrote, once the client closed.
func probeServer(t *testing.T, head, endless string) (string, <-chan int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	wrote := make(chan int64, 1)
	go func() {
		var n int64
		defer func() { wrote <- n }()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Small kernel buffers, so that what the server manages to
		// write is close to what the client read.
		c.(*net.TCPConn).SetWriteBuffer(16 << 10)
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		m, err := io.WriteString(c, head)
		n += int64(m)
		if err != nil || endless == "" {
			return
		}
		chunk := strings.Repeat(endless, (32<<10)/len(endless)+1)
		for {
			m, err := io.WriteString(c, chunk)
			n += int64(m)
			if err != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), wrote
}

// TestProbeHTTPBounded: a worker answering the HTTP readiness probe
// with a header or a body without end fails the probe (the header) or
// not (the body, after a 200), and the probe reads a bounded amount.
func TestProbeHTTPBounded(t *testing.T) {
	const (
		// What the probe may read: its limits, and a bufio buffer.
		maxRead = probeMaxHeader + probeMaxBody + 4<<10
		// What the server may have written: that, and the two kernel
		// buffers (16 KiB asked, doubled by the kernel) in between.
		maxWritten = maxRead + 256<<10
	)
	cases := []struct {
		name, head, endless string
		wantErr             string // "" for success
	}{
		{"endless header line", "HTTP/1.1 200 OK\r\nX-Endless: ", "a", "status line and header longer than 65536 bytes"},
		{"endless header lines", "HTTP/1.1 200 OK\r\n", "X-More: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", "status line and header longer than 65536 bytes"},
		{"endless status line", "HTTP/1.1 200 O", "K", "status line and header longer than 65536 bytes"},
		{"endless body", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "ready ", ""},
		{"endless body of a 503", "HTTP/1.1 503 Service Unavailable\r\n\r\n", "not yet ", "GET /ready: 503 Service Unavailable"},
		{"plain 200", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, wrote := probeServer(t, tc.head, tc.endless)
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			raw.(*net.TCPConn).SetReadBuffer(16 << 10)
			// A failure bound only: the probe returns at its limit.
			raw.SetDeadline(time.Now().Add(time.Minute))
			c := &countingConn{Conn: raw}
			err = probeHTTP(c, "/ready", "127.0.0.1")
			raw.Close()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("probe: %v, want success", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("probe: %v, want an error with %q", err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "timeout") {
				t.Errorf("the probe ran into its deadline: it did not stop at its limit")
			}
			n := <-wrote
			t.Logf("probe read %d bytes; server wrote %d", c.read.Load(), n)
			if r := c.read.Load(); r > maxRead {
				t.Errorf("probe read %d bytes, want at most %d", r, maxRead)
			}
			if n > maxWritten {
				t.Errorf("server wrote %d bytes before the probe closed, want at most %d", n, maxWritten)
			}
		})
	}
}
