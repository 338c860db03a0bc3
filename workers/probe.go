package workers

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff/steer"
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
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: handoff-probe\r\nConnection: close\r\n\r\n", p.path, p.host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.path, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", p.path, resp.Status)
	}
	return nil
}

// describe says how the worker became ready.
func (p *prober) describe() string {
	if p.path == "" {
		return "probe: connection accepted"
	}
	return "probe: GET " + p.path + " answered"
}
