package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

// stream opens /events and returns its events as they come; the stream
// closes when ctx ends.
func stream(t *testing.T, ctx context.Context, url string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := (&http.Transport{DisableKeepAlives: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan sseEvent, 64)
	if resp.StatusCode != 200 {
		resp.Body.Close()
		close(ch)
		return resp, ch
	}
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return resp, ch
}

// waitEvent returns the first event of ch that ok accepts, among those
// received before (kept in seen) or after.
func waitEvent(t *testing.T, ch <-chan sseEvent, seen *[]sseEvent, what string, ok func(sseEvent) bool) sseEvent {
	t.Helper()
	for _, ev := range *seen {
		if ok(ev) {
			return ev
		}
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, open := <-ch:
			if !open {
				t.Fatalf("stream ended waiting for %s", what)
			}
			*seen = append(*seen, ev)
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s on the stream", what)
		}
	}
}

func liveStatus(gen int, pids ...int) workers.Status {
	st := workers.Status{PID: 4242, Version: "v9", Phase: workers.MasterServing, Generation: gen, Serving: true,
		Counters: workers.Counters{Restarts: map[string]int{}}}
	for i, pid := range pids {
		st.Workers = append(st.Workers, workers.WorkerStatus{Slot: i, PID: pid, Generation: gen, State: workers.Ready,
			Since: time.Now(), Queue: map[string]int{"http": i}, RSS: 3 << 20})
	}
	return st
}

func TestStatusPage(t *testing.T) {
	src := &fakeSource{}
	src.set(liveStatus(1, 101, 102))
	s := newServer(t, src, Options{})
	base := start(t, s)
	s.Observe(workers.Event{Kind: workers.EventServing, Generation: 1, Status: liveStatus(1, 101, 102)})
	s.Observe(workers.Event{Kind: workers.EventReloaded, Generation: 2, Status: liveStatus(1, 101, 102),
		Reload: &workers.ReloadResult{Generation: 2, Error: "worker exited before ready", Duration: 1500 * time.Millisecond}})
	s.Observe(workers.Event{Kind: workers.EventReloaded, Generation: 3, Status: liveStatus(3, 301, 302),
		Reload: &workers.ReloadResult{Generation: 3, OK: true, Duration: 2 * time.Second}})
	src.set(liveStatus(3, 301, 302))
	code, h, body := fetch(t, "GET", base+"/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", code, h.Get("Content-Type"))
	}
	for _, want := range []string{`<b id="gen">3</b>`, `data-pid="302"`, `data-kind="serving"`, "v9", "4242", "3.0 MB",
		`<td>reload <span class="ok">ok</span> in 2.0s</td>`, `<td>reload <span class="bad">rolled back</span></td><td>2</td>`, "worker exited before ready"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{"http://", "https://", "src="} {
		if strings.Contains(body, bad) {
			t.Errorf("page has %q: it must load nothing", bad)
		}
	}
	if len(body) > 12<<10 {
		t.Errorf("page is %d bytes", len(body))
	}
}

func TestEventsStream(t *testing.T) {
	src := &fakeSource{}
	src.set(liveStatus(1, 101, 102))
	s := newServer(t, src, Options{})
	base := start(t, s)
	s.Observe(workers.Event{Kind: workers.EventServing, Generation: 1, Status: liveStatus(1, 101, 102)})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, ch := stream(t, ctx, base+"/events")
	var seen, seen2 []sseEvent
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	gen := func(n int) func(sseEvent) bool {
		return func(ev sseEvent) bool {
			var f frame
			return ev.name == "status" && json.Unmarshal([]byte(ev.data), &f) == nil && f.Status.Generation == n
		}
	}
	waitEvent(t, ch, &seen, "a status of generation 1", gen(1))
	hasEntry := func(kind history.Kind, g int) func(sseEvent) bool {
		return func(ev sseEvent) bool {
			var m struct{ Entries []history.Entry }
			if ev.name != "history" || json.Unmarshal([]byte(ev.data), &m) != nil {
				return false
			}
			for _, e := range m.Entries {
				if e.Kind == kind && e.Generation == g {
					return true
				}
			}
			return false
		}
	}
	// Entries from before the stream opened come first.
	waitEvent(t, ch, &seen, "the serving entry", hasEntry(history.KindServing, 1))

	src.set(liveStatus(2, 201, 202))
	s.Observe(workers.Event{Kind: workers.EventReloaded, Generation: 2, Status: liveStatus(2, 201, 202),
		Reload: &workers.ReloadResult{Generation: 2, OK: true, Duration: time.Second}})
	waitEvent(t, ch, &seen, "the reload entry", hasEntry(history.KindReload, 2))
	f := waitEvent(t, ch, &seen, "a status of generation 2", gen(2))
	var fr frame
	json.Unmarshal([]byte(f.data), &fr)
	if len(fr.Generations) != 2 || len(fr.Queues) != 1 || len(fr.Queues[0].Slots) != 2 {
		t.Errorf("frame: generations %+v queues %+v", fr.Generations, fr.Queues)
	}

	// A client that saw up to entry N asks for what follows.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	_, ch2 := stream(t, ctx2, base+"/events?since=2")
	ev := waitEvent(t, ch2, &seen2, "history", func(ev sseEvent) bool { return ev.name == "history" })
	var m struct{ Entries []history.Entry }
	json.Unmarshal([]byte(ev.data), &m)
	if len(m.Entries) == 0 || m.Entries[0].Seq != 3 {
		t.Errorf("since=2 starts with %+v", m.Entries)
	}

	// Streams end when the endpoint stops.
	s.live.stop()
	for range ch {
	}
}

func TestWatchersBounded(t *testing.T) {
	src := &fakeSource{}
	src.set(liveStatus(1, 101))
	s := newServer(t, src, Options{MaxWatchers: 2})
	base := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 2; i++ {
		resp, ch := stream(t, ctx, base+"/events")
		var seen []sseEvent
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i, resp.StatusCode)
		}
		waitEvent(t, ch, &seen, "a status", func(ev sseEvent) bool { return ev.name == "status" })
	}
	code, _, body := fetch(t, "GET", base+"/events")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("third stream: %d %s", code, body)
	}
	// The probes still answer.
	if code, _, _ := fetch(t, "GET", base+"/healthz"); code != 200 {
		t.Fatalf("/healthz with the watchers at their cap: %d", code)
	}
	cancel()
	// Once they are gone, the frame loop stops and a new watcher is let in.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.live.mu.Lock()
		idle := s.live.watchers == 0 && !s.live.running
		s.live.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watchers or frame loop left after the streams closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	resp, _ := stream(t, ctx2, base+"/events")
	io.Copy(io.Discard, io.LimitReader(resp.Body, 0))
	if resp.StatusCode != 200 {
		t.Fatalf("stream after the others left: %d", resp.StatusCode)
	}
}

// A stream does not hold the endpoint up when it stops: Serve returns at
// once, and the stream ends.
func TestStreamsEndWithServe(t *testing.T) {
	src := &fakeSource{}
	src.set(liveStatus(1, 101))
	s := newServer(t, src, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	resp, ch := stream(t, sctx, "http://"+s.Addr().String()+"/events")
	if resp.StatusCode != 200 {
		t.Fatalf("/events: %d", resp.StatusCode)
	}
	var seen []sseEvent
	waitEvent(t, ch, &seen, "a status", func(ev sseEvent) bool { return ev.name == "status" })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(drainWait - time.Second):
		t.Fatal("Serve waited for the stream to end")
	}
	for range ch {
	}
}
