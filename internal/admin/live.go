package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// Status page bounds.
const (
	// DefaultMaxWatchers caps the /events streams open at once.
	DefaultMaxWatchers = 16
	// frameEvery is the least time between two status frames, and
	// between two writes to one stream.
	frameEvery = 200 * time.Millisecond
	// refreshEvery is how often, while someone watches and no event
	// came, a fresh status is taken (queues and memory move without
	// events).
	refreshEvery = time.Second
	// pingEvery is how often an idle stream gets a comment line.
	pingEvery = 25 * time.Second
	// streamWriteTimeout bounds one write to a stream.
	streamWriteTimeout = 10 * time.Second
	// queueWindow is how far back the queue charts go, and queueSamples
	// how many samples per slot they keep.
	queueWindow  = 60 * time.Second
	queueSamples = 90
	// historyBatch bounds the entries in one history message.
	historyBatch = 64
)

// frame is one status snapshot as the page shows it: the JSON of every
// "status" message on /events, and what GET / renders.
type frame struct {
	Now         time.Time            `json:"now"`
	Status      workers.Status       `json:"status"`
	Generations []history.Generation `json:"generations"`
	Queues      []queueChart         `json:"queues"`
}

// queueChart is one steered listener's accept queue per slot, sampled.
type queueChart struct {
	Listener string        `json:"listener"`
	Slots    []queueSeries `json:"slots"`
}

type queueSeries struct {
	Slot int `json:"slot"`
	// T is each sample's time in Unix milliseconds, V its value.
	T []int64 `json:"t"`
	V []int   `json:"v"`
}

// live turns the status into frames for the page and its streams. It
// works only while someone watches: with no stream open it holds the
// last status Observe gave and no goroutine.
type live struct {
	s    *Server
	hist *history.History
	max  int
	kick chan struct{} // a new status from Observe (capacity 1)
	done chan struct{} // closed when the endpoint stops

	mu       sync.Mutex
	watchers int
	running  bool           // the frame loop runs
	observed workers.Status // the last status Observe gave
	fresh    bool           // observed is newer than the last frame
	frame    []byte         // the last frame's JSON
	ver      uint64         // counts frames
	changed  chan struct{}  // closed at the next frame
	queues   map[string]map[int]*queueSeries
	stopOnce sync.Once
}

func newLive(s *Server, h *history.History, max int) *live {
	return &live{s: s, hist: h, max: max, kick: make(chan struct{}, 1), done: make(chan struct{}),
		changed: make(chan struct{}), queues: map[string]map[int]*queueSeries{}}
}

// observe keeps st for the next frame. It never blocks.
func (l *live) observe(st workers.Status) {
	l.mu.Lock()
	l.observed, l.fresh = st, true
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *live) stop() { l.stopOnce.Do(func() { close(l.done) }) }

// join admits a watcher, unless max are watching.
func (l *live) join() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watchers >= l.max {
		return false
	}
	l.watchers++
	if !l.running {
		l.running = true
		go l.loop()
	}
	return true
}

func (l *live) leave() {
	l.mu.Lock()
	l.watchers--
	l.mu.Unlock()
}

// current returns the last frame, its number, and a channel closed at
// the next.
func (l *live) current() ([]byte, uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.frame, l.ver, l.changed
}

// loop makes frames while anyone watches: at each new status from
// Observe, or every refreshEvery without one, at most one per
// frameEvery.
func (l *live) loop() {
	refresh := time.NewTimer(0)
	defer refresh.Stop()
	for {
		select {
		case <-l.done:
			l.mu.Lock()
			l.running = false
			l.mu.Unlock()
			return
		case <-l.kick:
		case <-refresh.C:
		}
		l.mu.Lock()
		if l.watchers == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		st, ok := l.observed, l.fresh
		l.fresh = false
		l.mu.Unlock()
		if !ok {
			var err error
			if st, err = l.s.snapshot(l.s.opts.StatusTimeout); err != nil {
				refresh.Reset(refreshEvery)
				continue
			}
		}
		f := l.makeFrame(st, time.Now())
		b, err := json.Marshal(f)
		if err == nil {
			l.mu.Lock()
			l.frame = b
			l.ver++
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		// Throttle: no frame before frameEvery has passed.
		t := time.NewTimer(frameEvery)
		select {
		case <-t.C:
		case <-l.done:
		}
		t.Stop()
		refresh.Reset(refreshEvery - frameEvery)
	}
}

// makeFrame builds a frame from st, sampling its queues into the charts.
func (l *live) makeFrame(st workers.Status, now time.Time) frame {
	f := frame{Now: now.Round(0), Status: st, Generations: l.hist.Generations()}
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := now.Add(-queueWindow).UnixMilli()
	seen := map[string]map[int]bool{}
	for _, w := range st.Workers {
		if w.State == workers.Exited || w.State == workers.Gone || w.Queue == nil {
			continue
		}
		for name, q := range w.Queue {
			if seen[name] == nil {
				seen[name] = map[int]bool{}
			}
			slots := l.queues[name]
			if slots == nil {
				slots = map[int]*queueSeries{}
				l.queues[name] = slots
			}
			sr := slots[w.Slot]
			if sr == nil {
				sr = &queueSeries{Slot: w.Slot}
				slots[w.Slot] = sr
			}
			if seen[name][w.Slot] {
				// Two workers of one slot (old and new generation): the
				// slot's chart shows their sum.
				sr.V[len(sr.V)-1] += q
				continue
			}
			seen[name][w.Slot] = true
			sr.T = append(sr.T, now.UnixMilli())
			sr.V = append(sr.V, q)
			i := 0
			for i < len(sr.T)-1 && (sr.T[i] < cut || len(sr.T)-i > queueSamples) {
				i++
			}
			sr.T, sr.V = append(sr.T[:0:0], sr.T[i:]...), append(sr.V[:0:0], sr.V[i:]...)
		}
	}
	for name, slots := range l.queues {
		if seen[name] == nil {
			delete(l.queues, name)
			continue
		}
		for slot := range slots {
			if !seen[name][slot] {
				delete(slots, slot)
			}
		}
	}
	f.Queues = l.chartsLocked()
	return f
}

// charts returns a copy of the queue charts.
func (l *live) charts() []queueChart {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.chartsLocked()
}

func (l *live) chartsLocked() []queueChart {
	names := make([]string, 0, len(l.queues))
	for name := range l.queues {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []queueChart
	for _, name := range names {
		c := queueChart{Listener: name}
		for _, sr := range l.queues[name] {
			c.Slots = append(c.Slots, queueSeries{Slot: sr.Slot, T: append([]int64(nil), sr.T...), V: append([]int(nil), sr.V...)})
		}
		sort.Slice(c.Slots, func(i, j int) bool { return c.Slots[i].Slot < c.Slots[j].Slot })
		out = append(out, c)
	}
	return out
}

// serveEvents streams frames and history entries as server-sent events:
// "status" (a frame, at most one per frameEvery) and "history" (entries
// after the query's since, then each new one; with "missed" when the
// history no longer holds some).
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	l := s.live
	if !l.join() {
		w.Header().Set("Retry-After", "10")
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("too many watchers (%d)", l.max))
		return
	}
	defer l.leave()
	since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
	if id, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		since = id // a reconnecting EventSource
	}
	if since > s.hist.Last() {
		since = 0 // numbers from another master (before an upgrade)
	}
	rc, ok := startStream(w, r)
	if !ok {
		return
	}
	var (
		f        = frames{hist: s.hist, since: since}
		buf      []byte
		lastSent time.Time
	)
	ping := time.NewTimer(pingEvery)
	defer ping.Stop()
	for {
		var changed <-chan struct{}
		var err error
		if buf, changed, err = f.next(buf[:0], l); err != nil {
			return
		}
		if len(buf) > 0 {
			rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, err := w.Write(buf); err != nil || rc.Flush() != nil {
				return
			}
			lastSent = time.Now()
			if !ping.Stop() {
				select {
				case <-ping.C:
				default:
				}
			}
			ping.Reset(pingEvery)
		}
		if s.hist.Last() > f.since {
			continue // more history than one batch
		}
		select {
		case <-changed:
		case <-s.hist.Changed():
		case <-ping.C:
			rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			if _, err := w.Write([]byte(": ping\n\n")); err != nil || rc.Flush() != nil {
				return
			}
			ping.Reset(pingEvery)
			continue
		case <-r.Context().Done():
			return
		case <-l.done:
			return
		}
		// At most one write per frameEvery.
		if wait := frameEvery - time.Since(lastSent); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			case <-l.done:
				t.Stop()
				return
			}
		}
	}
}

// startStream answers a stream request's headers: a text/event-stream
// whose writes are bounded one by one (the server's timeouts bound a
// request; a stream lasts). It reports false if there is nothing more
// to send (HEAD) or the client is gone.
func startStream(w http.ResponseWriter, r *http.Request) (*http.ResponseController, bool) {
	rc := http.NewResponseController(w)
	// Reads: none (the server notices a closed connection); writes:
	// each is bounded.
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return rc, false
	}
	return rc, rc.Flush() == nil
}

// frames is one stream's position: the status version it sent last,
// and the last history entry.
type frames struct {
	hist  *history.History
	sent  uint64
	since uint64
}

// next appends to buf what the stream has not sent yet: the status, if
// it changed, and a batch of history. changed is closed at the next
// change of status.
func (f *frames) next(buf []byte, l *live) ([]byte, <-chan struct{}, error) {
	b, ver, changed := l.current()
	if ver != f.sent && b != nil {
		buf = append(buf, "event: status\ndata: "...)
		buf = append(append(buf, b...), "\n\n"...)
		f.sent = ver
	}
	entries, missed := f.hist.Since(f.since, historyBatch)
	if len(entries) == 0 && missed == 0 {
		return buf, changed, nil
	}
	last := f.since + missed
	if len(entries) > 0 {
		last = entries[len(entries)-1].Seq
	}
	hb, err := json.Marshal(struct {
		Entries []history.Entry `json:"entries"`
		Missed  uint64          `json:"missed,omitempty"`
	}{entries, missed})
	if err != nil {
		return buf, changed, fmt.Errorf("history: %w", err)
	}
	buf = fmt.Appendf(buf, "event: history\nid: %d\ndata: ", last)
	buf = append(append(buf, hb...), "\n\n"...)
	f.since = last
	return buf, changed, nil
}
