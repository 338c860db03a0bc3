package main

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"html"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheticData is what a run of every plotted part could have recorded.
func syntheticData() *benchData {
	rng := rand.New(rand.NewPCG(1, 2))
	d := &benchData{Command: "go -C bench run . -parts reload,balance,scale,load", Date: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC),
		Others: map[string]float64{"reload": 0.01, "scale": 0.09}}
	for _, side := range []string{"handoff + hello (2): steer (ebpf, round-robin)", "handoff + hello (2), shared", "node cluster (2)", "PM2 cluster (2)"} {
		rs := reloadSeries{Side: side, Rate: 1000, BucketMS: 100}
		for i := range 60 {
			rs.OK = append(rs.OK, 95+rng.IntN(10))
			f := 0
			if side == "node cluster (2)" && i == 31 {
				f = 3
			}
			rs.Failed = append(rs.Failed, f)
		}
		rs.Reloads = []float64{0.2, 1.4, 2.6, 3.8, 5.0}
		d.Reload = append(d.Reload, rs)
	}
	for _, side := range []string{"handoff + hello (4), steer, eBPF", "handoff + hello (4), shared", "node cluster (4)"} {
		bs := balanceSeries{Side: side, Workers: 4}
		for range 3 {
			bs.Rounds = append(bs.Rounds, perWorker(map[int]int{1: 16 + rng.IntN(4), 2: 16, 3: 15, 4: 14}, 4))
		}
		d.Balance = append(d.Balance, bs)
	}
	for _, n := range []int{1, 8, 64} {
		s := scaleSeries{Workers: n}
		for range 5 {
			s.ServingMS = append(s.ServingMS, float64(n)*(20+rng.Float64()*5))
			s.GoneMS = append(s.GoneMS, float64(n)*(30+rng.Float64()*5))
			s.ShareMS = append(s.ShareMS, float64(n)*(2+rng.Float64()))
			s.CPUMS = append(s.CPUMS, float64(n)*(0.5+rng.Float64()/4))
		}
		d.Scale = append(d.Scale, s)
	}
	for _, side := range []struct {
		name   string
		shared bool
		slow   float64
	}{{"handoff + node (4), steer (default)", false, 0.001}, {"handoff + node (4), shared", true, 0.2}, {"PM2 cluster (4)", false, 0.25}} {
		var lat []float64
		for range 10000 {
			v := 0.3 + rng.ExpFloat64()
			if rng.Float64() < side.slow {
				v += 500 * rng.Float64()
			}
			lat = append(lat, v)
		}
		d.Load = append(d.Load, latencySeries{Side: side.name, App: "node", Shared: side.shared, FastMS: thin(lat, maxLatencyPoints), Count: len(lat)})
	}
	return d
}

// checkSVG fails t unless path is well-formed XML with an svg root that
// shows each of texts.
func checkSVG(t *testing.T, path string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	for _, s := range texts {
		if !bytes.Contains(b, []byte(html.EscapeString(s))) {
			t.Errorf("%s does not show %q", path, s)
		}
	}
}

func TestPlotsFromSyntheticData(t *testing.T) {
	d := syntheticData()
	dir := t.TempDir()
	// Through the file, as -plots-from reads it.
	path := filepath.Join(dir, "data.json")
	if err := writeData(path, d); err != nil {
		t.Fatal(err)
	}
	d2, err := readData(path)
	if err != nil {
		t.Fatal(err)
	}
	files, err := writePlots(d2, filepath.Join(dir, "plots"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		plotReloadFile:  "Reload timeline",
		plotBalanceFile: "Balance: keep-alive connections per worker",
		plotScaleFile:   "Scale: a reload",
		plotLoadFile:    "Load: fast requests beside",
	}
	if len(files) != len(want) {
		t.Fatalf("wrote %v, want %d files", files, len(want))
	}
	for _, f := range files {
		w, ok := want[filepath.Base(f)]
		if !ok {
			t.Fatalf("unexpected file %s", f)
		}
		checkSVG(t, f, w, "measured by: "+d.Command)
	}
	// The scale part ran with others busy: its plot says so; the reload
	// part's does not.
	checkSVG(t, filepath.Join(dir, "plots", plotScaleFile), "figures may be skewed")
	if b, _ := os.ReadFile(filepath.Join(dir, "plots", plotReloadFile)); bytes.Contains(b, []byte("skewed")) {
		t.Error("the reload plot is flagged though others were quiet")
	}
	// Every side shows in the reload timeline.
	checkSVG(t, filepath.Join(dir, "plots", plotReloadFile), "PM2 cluster (2)", "handoff + hello (2), shared", "failed (3 in all)")
}

func TestPlotsSmokeAndEmpty(t *testing.T) {
	d := syntheticData()
	d.Smoke = true
	d.Balance, d.Scale, d.Load = nil, nil, nil
	dir := t.TempDir()
	files, err := writePlots(d, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || filepath.Base(files[0]) != plotReloadFile {
		t.Fatalf("wrote %v, want only the reload timeline", files)
	}
	checkSVG(t, files[0], "SMOKE RUN")
	files, err = writePlots(&benchData{}, t.TempDir())
	if err != nil || len(files) != 0 {
		t.Fatalf("no data: wrote %v, %v", files, err)
	}
}

func TestThin(t *testing.T) {
	var xs []float64
	for i := range 1001 {
		xs = append(xs, float64(1000-i))
	}
	got := thin(xs, 11)
	if len(got) != 11 || got[0] != 0 || got[10] != 1000 || got[5] != 500 {
		t.Fatalf("thin: %v", got)
	}
	if got := thin([]float64{3, 1, 2}, 10); len(got) != 3 || got[0] != 1 {
		t.Fatalf("thin of few: %v", got)
	}
}

func TestParseGauge(t *testing.T) {
	in := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines_total 1\ngo_goroutines 17\n"
	g, err := parseGauge(bufioScanner(in), "go_goroutines")
	if err != nil || g != 17 {
		t.Fatalf("go_goroutines: %v, %v", g, err)
	}
	if _, err := parseGauge(bufioScanner("x 1\n"), "go_goroutines"); err == nil || !strings.Contains(err.Error(), "no go_goroutines") {
		t.Fatalf("missing gauge: %v", err)
	}
}

func bufioScanner(s string) *bufio.Scanner { return bufio.NewScanner(strings.NewReader(s)) }
