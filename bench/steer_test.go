package main

import (
	"strings"
	"testing"
)

func TestRatioCell(t *testing.T) {
	shared := []float64{100, 100, 100, 100, 100, 100, 100, 100, 100}
	steer := []float64{99, 100, 101, 102, 100, 99, 100, 101, 100}
	if got := ratioCell(steer, shared, true); got != "1.00 (0.99–1.01) ≥ 0.98: ✓" {
		t.Errorf("ratioCell = %q", got)
	}
	low := []float64{90, 92, 91, 93, 90, 91, 92, 91, 90}
	if got := ratioCell(low, shared, true); !strings.HasSuffix(got, "✗") {
		t.Errorf("ratioCell of a clear loss = %q", got)
	}
	wide := []float64{90, 110, 95, 105, 100, 92, 108, 97, 103}
	if got := ratioCell(wide, shared, true); !strings.HasSuffix(got, "unresolved") {
		t.Errorf("ratioCell of noisy rounds = %q", got)
	}
	if got := ratioCell([]float64{99}, []float64{100}, true); got != "0.99 (1 round: too few for a 95 % interval) ≥ 0.98: –" {
		t.Errorf("ratioCell of one round = %q", got)
	}
	if got := ratioCell(steer, shared, false); got != "1.00 (0.99–1.01)" {
		t.Errorf("ratioCell without a goal = %q", got)
	}
	// A missing sample on either side leaves the round out.
	if rs := roundRatios([]float64{2, 0, 3}, []float64{1, 1, 0}); len(rs) != 1 || rs[0] != 2 {
		t.Errorf("roundRatios = %v", rs)
	}
}
