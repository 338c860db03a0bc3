package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

func TestDurQuantile(t *testing.T) {
	if got := durQuantile(nil, 0.99); got != 0 {
		t.Errorf("durQuantile(nil) = %v", got)
	}
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := durQuantile(xs, c.q); got != c.want {
			t.Errorf("durQuantile(1..100 ms, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	// Nearest rank: one slow request in 50 is the p99.
	few := make([]time.Duration, 50)
	for i := range few {
		few[i] = time.Millisecond
	}
	few[49] = time.Second
	if got := durQuantile(few, 0.99); got != time.Second {
		t.Errorf("p99 of 49 fast and 1 slow = %v, want 1s", got)
	}
}

func TestSummarizeFast(t *testing.T) {
	recs := []reqRecord{
		{start: 0, end: 2 * time.Millisecond},
		{start: time.Second, end: time.Second + 4*time.Millisecond},
		{start: 2 * time.Second, end: 3 * time.Second},
		{start: 3 * time.Second, end: 13 * time.Second, err: "timeout"},
	}
	f := summarizeFast(recs, 2*time.Second)
	if f.ok != 3 || f.failed != 1 || f.errs["timeout"] != 1 {
		t.Errorf("ok %d failed %d errs %v", f.ok, f.failed, f.errs)
	}
	if f.rps != 1.5 {
		t.Errorf("rps = %v, want 1.5", f.rps)
	}
	if f.p50 != 4*time.Millisecond || f.p99 != time.Second {
		t.Errorf("p50 %v p99 %v", f.p50, f.p99)
	}
}

func TestPerSecondAndRecovery(t *testing.T) {
	var recs []reqRecord
	add := func(at time.Duration, n int, err string) {
		for range n {
			recs = append(recs, reqRecord{start: at - time.Millisecond, end: at, err: err})
		}
	}
	add(500*time.Millisecond, 50, "") // warm-up, left out
	add(1500*time.Millisecond, 100, "")
	add(2500*time.Millisecond, 100, "")
	// The STOP at 3 s: a second at zero, one at 40 %, then back.
	add(4500*time.Millisecond, 40, "")
	add(4600*time.Millisecond, 5, "timeout") // failures do not count
	add(5500*time.Millisecond, 90, "")
	add(6500*time.Millisecond, 100, "")
	add(7500*time.Millisecond, 100, "") // after the run's seconds: left out
	before := rateBetween(recs, time.Second, 3*time.Second)
	if before != 100 {
		t.Fatalf("rateBetween = %v, want 100", before)
	}
	after := perSecond(recs, 3*time.Second, 4)
	if fmt.Sprint(after) != "[0 40 90 100]" {
		t.Fatalf("perSecond = %v", after)
	}
	if k := recoveredAfter(after, before, 0.7); k != 2 {
		t.Errorf("recoveredAfter = %d, want 2", k)
	}
	if got := fmtSeconds(after, before); got != "0 / 40 / 90 / 100" {
		t.Errorf("fmtSeconds = %q", got)
	}
	if k := recoveredAfter([]float64{100, 95, 80}, 100, 0.7); k != 0 {
		t.Errorf("never dropped: recoveredAfter = %d, want 0", k)
	}
	if k := recoveredAfter([]float64{100, 0, 80, 10}, 100, 0.7); k != -1 {
		t.Errorf("down at the end: recoveredAfter = %d, want -1", k)
	}
	// Back for a second, down again: it counts from the last drop.
	if k := recoveredAfter([]float64{0, 90, 0, 90, 90}, 100, 0.7); k != 3 {
		t.Errorf("recoveredAfter = %d, want 3", k)
	}
	if k := recoveredAfter([]float64{1, 2}, 0, 0.7); k != -1 {
		t.Errorf("no level before: recoveredAfter = %d, want -1", k)
	}
}

func TestRatioJudge(t *testing.T) {
	nine := func(x float64) []float64 {
		return []float64{x - 0.02, x - 0.01, x, x + 0.01, x + 0.02, x, x - 0.01, x + 0.01, x}
	}
	if cell, v := ratioJudge(nine(1.2), 1.5, true); v != "✓" || !strings.HasPrefix(cell, "1.20 (") {
		t.Errorf("p99 ratio 1.2, at most 1.5: %q %q", cell, v)
	}
	if _, v := ratioJudge(nine(20), 1.5, true); v != "✗" {
		t.Errorf("p99 ratio 20, at most 1.5: %q", v)
	}
	if _, v := ratioJudge(nine(1.5), 1.5, true); v != "unresolved" {
		t.Errorf("p99 ratio on the goal: %q", v)
	}
	if _, v := ratioJudge(nine(0.95), 0.9, false); v != "✓" {
		t.Errorf("rps ratio 0.95, at least 0.9: %q", v)
	}
	if _, v := ratioJudge(nine(0.5), 0.9, false); v != "✗" {
		t.Errorf("rps ratio 0.5, at least 0.9: %q", v)
	}
	if cell, v := ratioJudge([]float64{1.1}, 1.5, true); v != "–" || !strings.Contains(cell, "too few") {
		t.Errorf("one round: %q %q", cell, v)
	}
	if _, v := ratioJudge(nine(1), 0, true); v != "" {
		t.Errorf("no goal: %q", v)
	}
	if cell, v := ratioJudge(nil, 1.5, true); cell != "–" || v != "–" {
		t.Errorf("no rounds: %q %q", cell, v)
	}
}

func TestSlotPID(t *testing.T) {
	st := handoffStatus{Workers: []workers.WorkerStatus{
		{Slot: 0, PID: 100, State: "ready"},
		{Slot: 1, PID: 101, State: "ready"},
	}}
	if p, state := slotPID(st, 0, 100); p != 0 || state != "ready" {
		t.Errorf("not replaced: %d %q", p, state)
	}
	st.Workers = append(st.Workers, workers.WorkerStatus{Slot: 0, PID: 200, State: "starting"})
	if p, state := slotPID(st, 0, 100); p != 200 || state != "starting" {
		t.Errorf("replacement starting: %d %q", p, state)
	}
	if p, state := slotPID(handoffStatus{}, 0, 100); p != 0 || state != "" {
		t.Errorf("empty status: %d %q", p, state)
	}
}

// TestLoops runs the slow and the fast clients against a server with a
// slow path.
func TestLoops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var slow atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slow.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Fprintf(w, "pid=%d slot=0 generation=1 version=v1\n", os.Getpid())
	})}
	go srv.Serve(l)
	defer srv.Close()
	ctx := context.Background()
	addr := l.Addr().String()

	stop, started := make(chan struct{}), make(chan struct{})
	done := make(chan slowTally, 1)
	go func() { done <- slowLoop(ctx, addr, "/slow", stop, started) }()
	<-started
	recs := closedLoop(ctx, loopOpts{addr: addr, path: "/", clients: 2, d: 300 * time.Millisecond, timeout: time.Second, firstAddr: 1}, time.Now())
	close(stop)
	st := <-done
	if st.ok < 2 || st.failed != 0 || slow.Load() != int64(st.ok) {
		t.Errorf("slow loop: %+v, server saw %d", st, slow.Load())
	}
	f := summarizeFast(recs, 300*time.Millisecond)
	if f.ok < 10 || f.failed != 0 {
		t.Errorf("fast: ok %d failed %d (%v)", f.ok, f.failed, f.errs)
	}
	for _, r := range recs {
		if r.start >= 300*time.Millisecond {
			t.Errorf("a request started at %v, after the run's end", r.start)
		}
	}

	// A server that accepts and never answers: each request times out.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	recs = closedLoop(ctx, loopOpts{addr: hung.Addr().String(), path: "/", clients: 1, d: 10 * time.Millisecond, timeout: 100 * time.Millisecond}, time.Now())
	if len(recs) != 1 || recs[0].err != "timeout" {
		t.Errorf("hung server: %+v, want one timeout", recs)
	}
}

func TestFmtSmallRatio(t *testing.T) {
	for f, want := range map[float64]string{0.0025: "0.0025", 0.05: "0.05", 0.5: "0.50", 316.48: "316.48", 0: "–"} {
		if got := fmtSmallRatio(f); got != want {
			t.Errorf("fmtSmallRatio(%v) = %q, want %q", f, got, want)
		}
	}
}

// TestSlowLoopNoServer: a slow client that cannot connect still says it
// started (the run must not wait for it) and counts its failures.
func TestSlowLoopNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	stop, started := make(chan struct{}), make(chan struct{})
	done := make(chan slowTally, 1)
	go func() { done <- slowLoop(t.Context(), addr, "/slow", stop, started) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("slowLoop did not say it started")
	}
	close(stop)
	st := <-done
	if st.ok != 0 || st.failed < 1 || st.errs["connection refused"] != int64(st.failed) {
		t.Errorf("slow loop against a closed port: %+v", st)
	}
}
