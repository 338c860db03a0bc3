package main

import (
	"math"
	"testing"
)

func TestPerWorkerAndMaxMin(t *testing.T) {
	got := perWorker(map[int]int{10: 3, 11: 9, 12: 5}, 4)
	if fmtCounts(got) != "9 / 5 / 3 / 0" {
		t.Errorf("perWorker = %v, want the idle fourth worker as 0", got)
	}
	if r := maxMin(got); !math.IsInf(r, 1) || fmtMaxMin(r) != "∞" {
		t.Errorf("maxMin with an idle worker = %v", r)
	}
	if r := maxMin(perWorker(map[int]int{1: 16, 2: 16, 3: 16, 4: 16}, 4)); r != 1 {
		t.Errorf("maxMin of an even deal = %v", r)
	}
	if r := maxMin(perWorker(map[int]int{1: 20, 2: 10}, 2)); r != 2 || fmtMaxMin(r) != "2.00" {
		t.Errorf("maxMin = %v", r)
	}
	// More answering pids than workers (a replaced worker): all count.
	if got := perWorker(map[int]int{1: 1, 2: 2, 3: 3}, 2); len(got) != 3 {
		t.Errorf("perWorker dropped a pid: %v", got)
	}
	if r := maxMin(nil); !math.IsNaN(r) || fmtMaxMin(r) != "–" {
		t.Errorf("maxMin(nil) = %v", r)
	}
}

func TestQuantileInf(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		xs   []float64
		q    float64
		want float64
	}{
		{[]float64{1, 2, 3}, 0.5, 2},
		{[]float64{1, 3}, 0.5, 2},
		{[]float64{1, inf}, 0.5, inf},
		{[]float64{inf, inf, 1}, 0.5, inf},
		{[]float64{inf, 1, 2}, 0.5, 2},
		{[]float64{inf, 1, 2}, 0, 1},
		{[]float64{inf, 1, 2}, 1, inf},
		{[]float64{inf, inf}, 0.5, inf},
	} {
		if got := quantile(c.xs, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.xs, c.q, got, c.want)
		}
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}

func TestMedianCI(t *testing.T) {
	// 9 samples: the 2nd and 8th smallest cover the median with
	// probability 1 - 2·10/512.
	xs := []float64{9, 1, 8, 2, 7, 3, 6, 4, 5}
	lo, hi, cov := medianCI(xs, 0.95)
	if lo != 2 || hi != 8 || math.Abs(cov-(1-20.0/512)) > 1e-12 {
		t.Errorf("medianCI(9 samples) = %v–%v (%v)", lo, hi, cov)
	}
	// 6 samples: only the extremes reach 95 % (1 - 2/64).
	lo, hi, cov = medianCI([]float64{6, 5, 4, 3, 2, 1}, 0.95)
	if lo != 1 || hi != 6 || math.Abs(cov-(1-2.0/64)) > 1e-12 {
		t.Errorf("medianCI(6 samples) = %v–%v (%v)", lo, hi, cov)
	}
	// 5 samples cannot reach 95 %: the extremes and their coverage.
	lo, hi, cov = medianCI([]float64{5, 4, 3, 2, 1}, 0.95)
	if lo != 1 || hi != 5 || cov >= 0.95 {
		t.Errorf("medianCI(5 samples) = %v–%v (%v)", lo, hi, cov)
	}
	// 20 samples: the 6th and 15th (coverage 0.959).
	var many []float64
	for i := 20; i >= 1; i-- {
		many = append(many, float64(i))
	}
	lo, hi, cov = medianCI(many, 0.95)
	if lo != 6 || hi != 15 || cov < 0.95 {
		t.Errorf("medianCI(20 samples) = %v–%v (%v)", lo, hi, cov)
	}
	if _, _, cov := medianCI(nil, 0.95); cov != 0 {
		t.Error("medianCI of nothing claims coverage")
	}
	if xs[0] != 9 {
		t.Error("medianCI sorted its argument in place")
	}
}

func TestGoalAtLeast(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   string
	}{
		{0.99, 1.02, "✓"},
		{0.98, 1.00, "✓"},
		{0.95, 0.979, "✗"},
		{0.97, 1.01, "unresolved"},
		{math.NaN(), math.NaN(), "–"},
	} {
		if got := goalAtLeast(c.lo, c.hi, 0.98); got != c.want {
			t.Errorf("goalAtLeast(%v, %v) = %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
}

func TestChanceMaxMin(t *testing.T) {
	// Deterministic (fixed seed), and what theory says: 64 connections
	// over 4 workers at random rarely split evenly; one worker over 4 is
	// always even.
	a, b := chanceMaxMin(64, 4, 5000), chanceMaxMin(64, 4, 5000)
	if a != b {
		t.Errorf("chanceMaxMin is not deterministic: %v, %v", a, b)
	}
	if a < 1.3 || a > 2.2 {
		t.Errorf("chanceMaxMin(64, 4) = %v, want about 1.6", a)
	}
	if c := chanceMaxMin(64, 1, 100); c != 1 {
		t.Errorf("chanceMaxMin with one worker = %v", c)
	}
	if c := chanceMaxMin(16, 4, 5000); c <= a {
		t.Errorf("fewer items should deal less evenly: 16 → %v, 64 → %v", c, a)
	}
	if !math.IsNaN(chanceMaxMin(0, 4, 10)) {
		t.Error("chanceMaxMin of nothing is not NaN")
	}
}

func TestStickyShare(t *testing.T) {
	c := addrCounts{
		"127.0.0.2": {1: 100},
		"127.0.0.3": {2: 99, 3: 1},
		"127.0.0.4": {1: 50, 2: 50},
		"127.0.0.5": {},
	}
	all, worst := stickyShare(c)
	if all != 249.0/300 || worst != 0.5 {
		t.Errorf("stickyShare = %v, %v", all, worst)
	}
	if got := fmtCounts(addrsPerWorker(c, 4)); got != "2 / 1 / 0 / 0" {
		t.Errorf("addrsPerWorker = %s", got)
	}
	if all, worst := stickyShare(nil); !math.IsNaN(all) || !math.IsNaN(worst) {
		t.Error("stickyShare of nothing is not NaN")
	}
	if fmtPct(0.995) != "99.5 %" || fmtPct(math.NaN()) != "–" {
		t.Error("fmtPct")
	}
}

func TestRoundsToResolve(t *testing.T) {
	// Half-width 0.04 around 1.00 against 0.98: twice too wide, so
	// four times the rounds.
	if got := roundsToResolve(12, 0.96, 1.03, 1.00, 0.98); got != 48 {
		t.Errorf("roundsToResolve = %d, want 48", got)
	}
	// Already clear of the goal: as many as now.
	if got := roundsToResolve(12, 0.99, 1.01, 1.00, 0.98); got != 12 {
		t.Errorf("roundsToResolve of a resolved interval = %d", got)
	}
	if got := roundsToResolve(12, 0.9, 1.1, 0.98, 0.98); got != 0 {
		t.Errorf("a median on the goal = %d, want 0 (never)", got)
	}
	// Below the goal, the upper half counts.
	if got := roundsToResolve(10, 0.90, 0.99, 0.97, 0.98); got != 40 {
		t.Errorf("roundsToResolve below the goal = %d, want 40", got)
	}
	if got := roundsToResolve(12, 0.5, 1.5, 0.98000001, 0.98); got != 1e6 {
		t.Errorf("roundsToResolve is not bounded: %d", got)
	}
}
