package workers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff/internal/steer"
)

// Probe is how the master checks that a worker is ready when the worker
// does not say so itself (READY=1): through the worker's own socket of a
// steered TCP listener, which the master holds and which no other worker
// accepts on. The kernel delivers the probe's connection to that socket
// alone (steer.Group.Dial), whether or not it gets clients yet.
type Probe struct {
	// HTTP, if set, is the path to GET: an answer 2xx or 3xx is ready.
	// Empty: the worker accepting the probe's connection is ready.
	HTTP string
	// Listener is the index in Config.Listeners of the steered TCP
	// listener to probe.
	Listener int
}

// probeEvery spaces a starting worker's probes; probeTimeout bounds one.
const (
	probeEvery   = 100 * time.Millisecond
	probeTimeout = 2 * time.Second
)

// prober probes one worker.
type prober struct {
	group *steer.Group
	bank  int
	slot  int
	path  string
	host  string
}

// probe reports nil once the worker is ready, else why not.
func (p *prober) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := p.group.Dial(ctx, p.bank, p.slot)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if p.path == "" {
		// The kernel completes handshakes for a listener by itself: the
		// worker proves it accepts by emptying its socket's queue, the
		// probe's connection included.
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			n, err := p.group.QueueLen(p.bank, p.slot)
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("connection not accepted within %s", probeTimeout)
			case <-t.C:
			}
		}
	}
	return probeHTTP(c, p.path, p.host)
}

// What an HTTP probe reads at most: the status line and header, then of
// the body (read only so the worker is not reset while it writes it).
const (
	probeMaxHeader = 64 << 10
	probeMaxBody   = 64 << 10
)

// probeHTTP asks for path on c, an established connection, and reports
// nil for an answer 2xx or 3xx. It reads at most probeMaxHeader bytes of
// status line and header and probeMaxBody of body: a worker answering
// without end must not grow the master.
func probeHTTP(c io.ReadWriter, path, host string) error {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: handoff-probe\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	lr := &probeLimit{r: c, n: probeMaxHeader}
	resp, err := http.ReadResponse(bufio.NewReader(lr), nil)
	if lr.hit {
		return fmt.Errorf("GET %s: status line and header longer than %d bytes", path, probeMaxHeader)
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	lr.n += probeMaxBody
	io.Copy(io.Discard, resp.Body) // the status decides, not the body
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// probeLimit reads from r until n bytes are read, then fails.
type probeLimit struct {
	r   io.Reader
	n   int64
	hit bool
}

func (l *probeLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.hit = true
		return 0, errProbeLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

var errProbeLimit = errors.New("probe: read limit reached")

// describe says how the worker became ready.
func (p *prober) describe() string {
	if p.path == "" {
		return "probe: connection accepted"
	}
	return "probe: GET " + p.path + " answered"
}
