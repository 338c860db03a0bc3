package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Statistics for the balance, steer and sticky parts.

// addrCounts is, per client address, how many connections each pid
// answered.
type addrCounts map[string]map[int]int

// perWorker is how many connections (or requests) each of n workers
// got, largest first. Workers missing from counts got none: there are
// at least n entries, zeros at the end.
func perWorker(counts map[int]int, n int) []int {
	out := make([]int, 0, max(n, len(counts)))
	for _, c := range counts {
		out = append(out, c)
	}
	for len(out) < n {
		out = append(out, 0)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out)))
	return out
}

// maxMin is the largest count over the smallest (+Inf if a worker got
// none; NaN without any count).
func maxMin(sorted []int) float64 {
	if len(sorted) == 0 || sorted[0] == 0 {
		return math.NaN()
	}
	last := sorted[len(sorted)-1]
	if last == 0 {
		return math.Inf(1)
	}
	return float64(sorted[0]) / float64(last)
}

// quantile is the q-quantile of xs (0 ≤ q ≤ 1), interpolated between the
// two nearest samples; NaN without samples. Unlike median, it keeps zeros
// and negative values: they are real samples. A sample may be +Inf (a
// max/min with an idle worker): interpolation stops at an infinite
// neighbour instead of making NaN of it.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	f := pos - float64(i)
	switch {
	case f == 0:
		return s[i]
	case math.IsInf(s[i+1], 1):
		return math.Inf(1)
	}
	return s[i] + f*(s[i+1]-s[i])
}

// medianCI is a distribution-free confidence interval for the median of
// the population xs were drawn from: the k-th smallest and k-th largest
// sample, k the largest for which the binomial law guarantees coverage
// ≥ conf. With too few samples for conf it returns the smallest and
// largest, and the coverage they do have.
func medianCI(xs []float64, conf float64) (lo, hi, coverage float64) {
	n := len(xs)
	if n == 0 {
		return math.NaN(), math.NaN(), 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	// P(X ≤ j) for X ~ Binomial(n, 1/2).
	cdf := make([]float64, n+1)
	p := math.Pow(0.5, float64(n))
	c := 1.0 // C(n, j)
	sum := 0.0
	for j := 0; j <= n; j++ {
		if j > 0 {
			c = c * float64(n-j+1) / float64(j)
		}
		sum += c * p
		cdf[j] = sum
	}
	// [s(k), s(n+1-k)] (1-based) covers the median with probability
	// 1 - 2·P(X ≤ k-1).
	k := 1
	for k+1 <= (n+1)/2 && 1-2*cdf[k] >= conf {
		k++
	}
	return s[k-1], s[n-k], 1 - 2*cdf[k-1]
}

// goalAtLeast judges a measured ratio against a goal it must reach,
// from the median's confidence interval: "✓" when all of it is at or
// above the goal, "✗" when all of it is below, "unresolved" otherwise.
func goalAtLeast(lo, hi, goal float64) string {
	switch {
	case math.IsNaN(lo) || math.IsNaN(hi):
		return "–"
	case lo >= goal:
		return "✓"
	case hi < goal:
		return "✗"
	}
	return "unresolved"
}

// roundsToResolve estimates how many rounds would bring the median's
// confidence interval (lo–hi, from n rounds) clear of goal, if the
// median stayed where it is: the half of the interval that faces the
// goal narrows as 1/√n. 0 when the
// median sits on the goal (no number of rounds would do).
func roundsToResolve(n int, lo, hi, med, goal float64) int {
	// The side of the interval that faces the goal.
	gap, half := med-goal, med-lo
	if med < goal {
		gap, half = goal-med, hi-med
	}
	if n < 1 || gap == 0 || math.IsNaN(gap) || math.IsNaN(half) {
		return 0
	}
	if half < gap {
		return n
	}
	r := float64(n) * (half / gap) * (half / gap)
	if r > 1e6 {
		return 1e6
	}
	return int(math.Ceil(r))
}

// chanceMaxMin is the median max/min of conns connections dealt to
// workers uniformly at random: what a hash of the 4-tuple gives at best.
// The seed is fixed, so the figure is the same on every run.
func chanceMaxMin(conns, workers, trials int) float64 {
	if conns < 1 || workers < 1 || trials < 1 {
		return math.NaN()
	}
	r := rand.New(rand.NewPCG(1, 2))
	ratios := make([]float64, trials)
	counts := make([]int, workers)
	for t := range ratios {
		clear(counts)
		for range conns {
			counts[r.IntN(workers)]++
		}
		lo, hi := counts[0], counts[0]
		for _, c := range counts[1:] {
			lo, hi = min(lo, c), max(hi, c)
		}
		if lo == 0 {
			ratios[t] = math.Inf(1)
		} else {
			ratios[t] = float64(hi) / float64(lo)
		}
	}
	return quantile(ratios, 0.5)
}

// stickyShare is, over client addresses, the share of each address's
// connections that reached the worker it reached most: the sum of those
// largest counts over all connections (all), and the smallest share of
// any one address (worst). NaN without connections.
func stickyShare(c addrCounts) (all, worst float64) {
	var top, total int
	worst = math.NaN()
	for _, per := range c {
		t, m := 0, 0
		for _, n := range per {
			t += n
			m = max(m, n)
		}
		if t == 0 {
			continue
		}
		top += m
		total += t
		if s := float64(m) / float64(t); math.IsNaN(worst) || s < worst {
			worst = s
		}
	}
	if total == 0 {
		return math.NaN(), math.NaN()
	}
	return float64(top) / float64(total), worst
}

// addrsPerWorker is how many client addresses each worker got most of
// their connections from, largest first: "5 / 5 / 4 / 2".
func addrsPerWorker(c addrCounts, n int) []int {
	byPID := map[int]int{}
	for _, per := range c {
		best, bestN := 0, -1
		for pid, k := range per {
			if k > bestN || (k == bestN && pid < best) {
				best, bestN = pid, k
			}
		}
		if bestN > 0 {
			byPID[best]++
		}
	}
	return perWorker(byPID, n)
}

// fmtMaxMin renders a max/min ratio.
func fmtMaxMin(f float64) string {
	switch {
	case math.IsNaN(f):
		return "–"
	case math.IsInf(f, 1):
		return "∞"
	}
	return fmt.Sprintf("%.2f", f)
}

// fmtCounts renders per-worker counts: "16 / 16 / 16 / 16".
func fmtCounts(cs []int) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprint(c)
	}
	return strings.Join(parts, " / ")
}

// fmtPct renders a share as a percentage: "99.9 %".
func fmtPct(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", 100*f)
}
