package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseAnswer(t *testing.T) {
	a, ok := parseAnswer([]byte("pid=123 slot=0 generation=4 version=v2\n"))
	if !ok || a.PID != 123 || a.Slot != "0" || a.Generation != 4 || a.Version != "v2" {
		t.Fatalf("got %+v, %v", a, ok)
	}
	a, ok = parseAnswer([]byte("pid=7 slot=- generation=- version=dev\n"))
	if !ok || a.PID != 7 || a.Generation != 0 {
		t.Fatalf("got %+v, %v", a, ok)
	}
	for _, bad := range []string{"", "hello", "pid=x slot=0", "slot=0 generation=1"} {
		if _, ok := parseAnswer([]byte(bad)); ok {
			t.Errorf("parseAnswer(%q) accepted", bad)
		}
	}
}

func TestParseWrk(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "wrk.log")
	out := "Running 1s test @ http://127.0.0.1:1/\n" +
		`BENCH-WRK {"requests":1000,"duration_us":2000000,"connect":2,"read":3,"write":0,"status":5,"timeout":0,"p50_us":100,"p99_us":2500,"per_pid":{"11":600,"12":395}}` + "\n"
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := parseWrk(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 1005 || r.Failed != 10 || r.P99 != 2500*time.Microsecond {
		t.Errorf("requests %d failed %d p99 %v", r.Requests, r.Failed, r.P99)
	}
	if r.RPS != 497.5 {
		t.Errorf("rps %v, want 497.5 (successes per second)", r.RPS)
	}
	if r.PerPID[11] != 600 || r.PerPID[12] != 395 {
		t.Errorf("per pid %v", r.PerPID)
	}
	if got := errorSummary(r.Errors); got != "5 status, 3 read, 2 connect" {
		t.Errorf("errorSummary = %q", got)
	}
	if err := os.WriteFile(p, []byte("wrk: connection refused\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parseWrk(p); err == nil {
		t.Error("parseWrk accepted output without a summary")
	}
}

func TestClassifyError(t *testing.T) {
	for _, c := range []struct {
		err  string
		code uint16
		want string
	}{
		{"Post \"http://127.0.0.1:1/\": dial tcp 127.0.0.1:1: connect: connection refused", 0, "connection refused"},
		{"Post \"http://127.0.0.1:1/\": read tcp 127.0.0.1:2->127.0.0.1:1: read: connection reset by peer", 0, "connection reset"},
		{"Post \"http://127.0.0.1:1/\": EOF", 0, "EOF"},
		{"503 Service Unavailable", 503, "HTTP 503"},
		{"", 500, "HTTP 500"},
	} {
		if got := classifyError(c.err, c.code); got != c.want {
			t.Errorf("classifyError(%q, %d) = %q, want %q", c.err, c.code, got, c.want)
		}
	}
}

func TestSpread(t *testing.T) {
	if got := spread(map[int]int64{1: 300, 2: 100}, []int{1, 2}, 2); got != "3.00 (300 / 100)" {
		t.Errorf("got %q", got)
	}
	// A worker that answered nothing counts as zero.
	if got := spread(map[int]int64{1: 300}, []int{1, 2}, 2); got != "∞ (300 / 0)" {
		t.Errorf("got %q", got)
	}
	if got := spread(nil, nil, 2); got != "no answers" {
		t.Errorf("got %q", got)
	}
}

func TestMedianAndRatios(t *testing.T) {
	if m := median([]float64{3, 0, 1, 2}); m != 2 {
		t.Errorf("median ignoring zeros = %v, want 2", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
	if m := median(nil); m != 0 {
		t.Errorf("median(nil) = %v", m)
	}
	// Round 2 is missing on one side: it is left out of the pairs.
	if r := pairedRatio([]float64{2, 3, 0}, []float64{1, 2, 5}); r != 1.75 {
		t.Errorf("pairedRatio = %v, want 1.75", r)
	}
	if got := order(3, 1); got[0] != 1 || got[1] != 2 || got[2] != 0 {
		t.Errorf("order(3, 1) = %v", got)
	}
}

func TestFailureTimes(t *testing.T) {
	t0 := time.Now()
	starts := []time.Time{t0, t0.Add(time.Second)}
	fs := []failure{
		{At: t0.Add(-time.Millisecond), Kind: "EOF"},
		{At: t0.Add(300 * time.Millisecond), Kind: "connection refused"},
		{At: t0.Add(1200 * time.Millisecond), Kind: "connection reset"},
	}
	got := failureTimes(fs, starts, 3)
	want := "before the first reload (EOF); reload 1 +300 ms (connection refused); reload 2 +200 ms (connection reset)"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if failureTimes(nil, starts, 0) != "" {
		t.Error("no failures should say nothing")
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	writeTable(&b, []string{"side", "n"}, [][]string{{"a|b", "1"}, {"c"}})
	want := "| side | n |\n| --- | ---: |\n| a\\|b | 1 |\n| c |  |\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestCheckConfig(t *testing.T) {
	good := config{rounds: 3, duration: 4 * time.Second, reloads: 20, rate: 1000, idle: time.Minute,
		workers: 2, conns: 64, wrkThreads: 1, latencyReloads: 5, scaleReloads: 15, readyRounds: 30,
		balanceWorkers: 4, balanceRounds: 10, steerRounds: 9, steerDuration: 2 * time.Second, stickyConns: 100,
		loadWorkers: 4, loadRounds: 6, loadDuration: 10 * time.Second, loadSlow: time.Second,
		hangBefore: 5 * time.Second, hangAfter: 20 * time.Second, hangRounds: 1, soakReloads: 1000, soakRate: 400,
		observersRounds: 6, observersWindow: 5 * time.Second, observersRate: 400, observersBrowser: "auto"}
	if err := checkConfig(good); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.soakReloads = 0
	if checkConfig(bad) == nil {
		t.Error("zero soak reloads accepted")
	}
	bad = good
	bad.conns = 0
	if checkConfig(bad) == nil {
		t.Error("zero connections accepted")
	}
	bad = good
	bad.duration = 0
	if checkConfig(bad) == nil {
		t.Error("zero duration accepted")
	}
	bad = good
	bad.steerDuration = time.Millisecond
	if err := checkConfig(bad); err == nil || !strings.Contains(err.Error(), "-steer-duration") {
		t.Errorf("a 1 ms steer run: %v", err)
	}
	bad = good
	bad.balanceWorkers = 0
	if err := checkConfig(bad); err == nil || !strings.Contains(err.Error(), "-balance-workers") {
		t.Errorf("no balance workers: %v", err)
	}
	bad = good
	bad.hangAfter = 2500 * time.Millisecond
	if err := checkConfig(bad); err == nil || !strings.Contains(err.Error(), "-hang-after") {
		t.Errorf("a hang run of 2.5 s: %v", err)
	}
	bad = good
	bad.observersBrowser = "firefox"
	if err := checkConfig(bad); err == nil || !strings.Contains(err.Error(), "-observers-browser") {
		t.Errorf("an unknown browser: %v", err)
	}
	bad = good
	bad.observersWindow = 0
	if err := checkConfig(bad); err == nil || !strings.Contains(err.Error(), "-observers-window") {
		t.Errorf("no observers window: %v", err)
	}
}

func TestLineWatcher(t *testing.T) {
	l := newLineWatcher()
	l.Write([]byte("cluster: generation 1 serving\ncluster: gen"))
	n := l.count()
	done := make(chan error, 1)
	go func() {
		_, err := l.waitFor(t.Context(), n, 5*time.Second, "generation 2 serving")
		done <- err
	}()
	l.Write([]byte("eration 2 serving pids=[1]\n"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := l.waitFor(t.Context(), l.count(), 10*time.Millisecond, "never"); err == nil {
		t.Error("waitFor found a line that was never written")
	}
	l.close()
	if _, err := l.waitFor(t.Context(), l.count(), time.Second, "never"); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("after close: %v", err)
	}
}

func TestFreePort(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if low > freePortMin && (p < freePortMin || p >= low) {
			t.Errorf("freePort = %d, want %d to %d, below the ephemeral range", p, freePortMin, low-1)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine([]string{"-parts", "load", "-load-rounds", "8", "-sides", "handoff + node", "-o", "it's.md"})
	want := `go -C bench run . -parts load -load-rounds 8 -sides 'handoff + node' -o 'it'\''s.md'`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := commandLine(nil); got != "go -C bench run ." {
		t.Errorf("no flags: %s", got)
	}
}
