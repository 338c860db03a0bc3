package main

import (
	"math"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseCounts(t *testing.T) {
	got, err := parseCounts(" 1, 8 ,64,")
	if err != nil || len(got) != 3 || got[0] != 1 || got[1] != 8 || got[2] != 64 {
		t.Fatalf("parseCounts = %v, %v", got, err)
	}
	for bad, want := range map[string]string{
		"":      "no worker count",
		"1,x":   `"x" is not a number`,
		"0,8":   "0 workers: want 1 to 256",
		"1,300": "300 workers: want 1 to 256",
		"8,8":   "8 after 8: want increasing counts",
		"8,1":   "1 after 8: want increasing counts",
	} {
		if _, err := parseCounts(bad); err == nil || err.Error() != want {
			t.Errorf("parseCounts(%q) = %v, want %q", bad, err, want)
		}
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{4, 1, 3, 2, 5}
	for q, want := range map[float64]float64{0: 1, 0.25: 2, 0.5: 3, 0.75: 4, 1: 5} {
		if got := quantile(xs, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	// Interpolated between samples; zeros and negatives are samples.
	if got := quantile([]float64{0, -2, 2, 4}, 0.5); got != 1 {
		t.Errorf("median of 0, -2, 2, 4 = %v, want 1", got)
	}
	if got := quantile([]float64{1, 2}, 0.25); got != 1.25 {
		t.Errorf("quantile(0.25) of 1, 2 = %v, want 1.25", got)
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
	if xs[0] != 4 {
		t.Error("quantile sorted its argument in place")
	}
}

func TestGrowth(t *testing.T) {
	from := []float64{9, 10, 11, 10, 10}
	to := []float64{80, 85, 90, 85, 85}
	mid, lo, hi := growth(from, to)
	if mid != 8.5 || lo != 85.0/10 || hi != 85.0/10 {
		t.Errorf("growth = %v (%v–%v)", mid, lo, hi)
	}
	if got := fmtGrowth(from, to, 8.5); got != "8.5× (8.5–8.5) ✓" {
		t.Errorf("at the goal: %q", got)
	}
	to = []float64{90, 100, 110}
	from = []float64{10, 10, 10}
	if got := fmtGrowth(from, to, 8.5); got != "10.0× (9.5–10.5) ✗" {
		t.Errorf("over the goal: %q", got)
	}
	if got := fmtGrowth(nil, to, 8.5); got != "–" {
		t.Errorf("without samples: %q", got)
	}
}

func TestFmtSpread(t *testing.T) {
	if got := fmtSpread([]float64{2, 1, 3, 4, 5}, fmtMS); got != "3.00 ms (2.00 ms–4.00 ms)" {
		t.Errorf("got %q", got)
	}
	// Too few samples for quartiles: the median alone.
	if got := fmtSpread([]float64{20, 40}, fmtMS); got != "30 ms" {
		t.Errorf("got %q", got)
	}
	if got := fmtSpread(nil, fmtMS); got != "–" {
		t.Errorf("got %q", got)
	}
}

func TestHasReady(t *testing.T) {
	for msg, want := range map[string]bool{
		"READY=1":                       true,
		"STATUS=serving\nREADY=1":       true,
		"READY=1\nSTATUS=x\nMAINPID=12": true,
		"READY=0":                       false,
		"STATUS=READY=1":                false,
		"READY=10":                      false,
		"":                              false,
	} {
		if got := hasReady([]byte(msg)); got != want {
			t.Errorf("hasReady(%q) = %v", msg, got)
		}
	}
}

// TestNotifyListener sends datagrams to a real fake NOTIFY_SOCKET: only
// the first READY=1 counts, and its arrival time lies between its send
// and its receipt.
func TestNotifyListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	l, err := listenNotify(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("STATUS=starting")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.wait(t.Context(), 50*time.Millisecond, nil); err == nil {
		t.Fatal("a datagram without READY=1 counted")
	}
	before := time.Now()
	if _, err := c.Write([]byte("STATUS=up\nREADY=1")); err != nil {
		t.Fatal(err)
	}
	at, err := l.wait(t.Context(), 10*time.Second, nil)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's stamp is wall-clock time: compare without the
	// monotonic readings, with a microsecond for rounding.
	if at.Before(before.Round(0).Add(-time.Microsecond)) || at.After(after.Round(0).Add(time.Microsecond)) {
		t.Errorf("READY=1 stamped %s, sent at %s, received by %s", at, before, after)
	}
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.wait(t.Context(), 50*time.Millisecond, nil); err == nil {
		t.Error("a second READY=1 counted")
	}
	dead := make(chan struct{})
	close(dead)
	if _, err := l.wait(t.Context(), 10*time.Second, dead); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("wait after the process exited: %v", err)
	}
}

// TestProcessCPU reads the CPU clock of a busy child and checks it
// against /proc/PID/stat's utime+stime, which count the same time in
// 10 ms ticks.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Skipf("no /bin/sh to burn CPU: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := processCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if c >= 200*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child used only %s of CPU in 30s", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The child keeps running: stat before ≤ clock ≤ stat after, give
	// or take the two truncated ticks.
	s0, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	c, err := processCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	const tick = time.Second / clkTck
	if c < s0-2*tick || c > s1+2*tick {
		t.Errorf("CPU clock %s, /proc stat %s then %s", c, s0, s1)
	}
	if _, err := processCPU(0); err == nil {
		t.Error("pid 0 accepted")
	}
}

// TestRecvTimestamp checks that the kernel stamps datagrams on a unix
// socket (the notify listener would otherwise fall back on its own clock)
// and that the stamp is parsed as the wall-clock time of the send.
func TestRecvTimestamp(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	path := filepath.Join(t.TempDir(), "s")
	srv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := enableRecvTimestamps(srv); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := time.Now().Round(0)
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 64), make([]byte, 256)
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, oobn, _, _, err := srv.ReadMsgUnix(buf, oob)
	after := time.Now().Round(0)
	if err != nil {
		t.Fatal(err)
	}
	at, err := recvTimestamp(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(before.Add(-time.Microsecond)) || at.After(after.Add(time.Microsecond)) {
		t.Errorf("stamp %s outside %s … %s", at, before, after)
	}
	if _, err := recvTimestamp(nil); err == nil {
		t.Error("no control message, yet a stamp")
	}
}
