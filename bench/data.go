package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"
)

// benchData is the raw series the plots are drawn from. A run saves it
// with -data (or next to the plots with -plots), and -plots-from draws the
// plots again from such a file without measuring anything.
type benchData struct {
	// Command is how the data was measured, for the plots' titles.
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Smoke   bool      `json:"smoke,omitempty"`
	// Others is, per part, the share of the machine's CPU other processes
	// used while it ran (0 to 1); figures from a part at busyShare or
	// more are flagged in the plots.
	Others  map[string]float64 `json:"others_cpu,omitempty"`
	Reload  []reloadSeries     `json:"reload,omitempty"`
	Balance []balanceSeries    `json:"balance,omitempty"`
	Scale   []scaleSeries      `json:"scale,omitempty"`
	Load    []latencySeries    `json:"load,omitempty"`
}

// reloadSeries is one side's vegeta run in the reload part: requests
// answered and failed per bucket (by when they completed), and when each
// reload started, all from the start of the run.
type reloadSeries struct {
	Side     string    `json:"side"`
	Rate     int       `json:"rate"`
	BucketMS int       `json:"bucket_ms"`
	OK       []int     `json:"ok"`
	Failed   []int     `json:"failed"`
	Reloads  []float64 `json:"reload_starts_s"`
}

// balanceSeries is one side's bursts in the balance part: per round, the
// connections each worker got, largest first.
type balanceSeries struct {
	Side    string  `json:"side"`
	Workers int     `json:"workers"`
	Rounds  [][]int `json:"rounds"`
}

// scaleSeries is one worker count of the scale part, per reload in ms.
type scaleSeries struct {
	Workers   int       `json:"workers"`
	ServingMS []float64 `json:"serving_ms"`
	GoneMS    []float64 `json:"gone_ms"`
	ShareMS   []float64 `json:"master_share_ms"`
	CPUMS     []float64 `json:"master_cpu_ms"`
	Others    float64   `json:"others_cpu"`
}

// latencySeries is one side's fast requests in the load part (beside a
// client looping on the slow path), over all rounds: their times in ms,
// sorted, thinned to at most maxLatencyPoints evenly spaced ranks.
type latencySeries struct {
	Side   string    `json:"side"`
	App    string    `json:"app"`    // gunicorn or node
	Shared bool      `json:"shared"` // handoff's --balance shared: the baseline
	FastMS []float64 `json:"fast_ms"`
	Count  int       `json:"count"` // fast requests answered, before thinning
}

// maxLatencyPoints bounds the samples a latencySeries keeps.
const maxLatencyPoints = 5000

// thin sorts xs and keeps at most n of them at evenly spaced ranks, the
// smallest and largest included: the distribution's shape stays.
func thin(xs []float64, n int) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) <= n || n < 2 {
		return s
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = s[i*(len(s)-1)/(n-1)]
	}
	return out
}

// record changes the run's data under the bench's lock (the smoke runs
// parts at once).
func (b *bench) record(f func(d *benchData)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.data)
}

func writeData(path string, d *benchData) error {
	buf, err := json.MarshalIndent(d, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(buf, '\n'), 0o644)
}

func readData(path string) (*benchData, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d benchData
	if err := json.Unmarshal(buf, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &d, nil
}
