package main

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The plots' files in the -plots directory.
const (
	plotReloadFile  = "reload-timeline.svg"
	plotBalanceFile = "balance-connections.svg"
	plotScaleFile   = "scale-reload.svg"
	plotLoadFile    = "load-fast-latency.svg"
	plotDataFile    = "bench-data.json"
)

// palette tells sides apart (colour-blind safe, Okabe–Ito).
var palette = []color.RGBA{
	{0, 114, 178, 255}, {213, 94, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255},
	{230, 159, 0, 255}, {86, 180, 233, 255}, {0, 0, 0, 255}, {240, 228, 66, 255},
}

func colorOf(i int) color.RGBA { return palette[i%len(palette)] }

// writePlots draws every plot d has data for into dir and returns the
// files written.
func writePlots(d *benchData, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	var errs []error
	for _, p := range []struct {
		file string
		draw func(*benchData) (*figure, error)
	}{
		{plotReloadFile, plotReload},
		{plotBalanceFile, plotBalance},
		{plotScaleFile, plotScale},
		{plotLoadFile, plotLoad},
	} {
		fig, err := p.draw(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.file, err))
			continue
		}
		if fig == nil {
			continue // no data for it
		}
		c := vgsvg.New(fig.w, fig.h)
		fig.draw(draw.New(c))
		path := filepath.Join(dir, p.file)
		f, err := os.Create(path)
		if err == nil {
			_, err = c.WriteTo(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files = append(files, path)
	}
	return files, errors.Join(errs...)
}

// title is a plot's title: what it shows, the command that measured it,
// and a warning when the figures are not for publication.
func title(d *benchData, what, part string) string {
	lines := []string{what, "measured by: " + d.Command + " (" + d.Date.UTC().Format("2006-01-02 15:04 UTC") + ")"}
	if d.Smoke {
		lines = append(lines, "SMOKE RUN: nothing here is a measurement")
	}
	if o, ok := d.Others[part]; ok && o >= busyShare {
		lines = append(lines, fmt.Sprintf("other processes used %s of the CPU meanwhile: figures may be skewed", fmtShare(o)))
	}
	return strings.Join(lines, "\n")
}

func newPlot(t, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = t
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.Text, p.Y.Label.Text = x, y
	p.Legend.Top = true
	return p
}

// figure is a plot ready to draw on a canvas of its size.
type figure struct {
	w, h vg.Length
	draw func(draw.Canvas)
}

func canvas(w, h vg.Length, p *plot.Plot) *figure {
	return &figure{w, h, p.Draw}
}

// plotReload: one panel per side, answered and failed requests per
// bucket, a vertical line at each reload's start.
func plotReload(d *benchData) (*figure, error) {
	if len(d.Reload) == 0 {
		return nil, nil
	}
	// One time axis for all: the panels compare at a glance.
	span := 0.0
	for _, s := range d.Reload {
		span = max(span, float64(len(s.OK))*float64(s.BucketMS)/1000)
	}
	var rows [][]*plot.Plot
	for i, s := range d.Reload {
		t := s.Side
		if i == 0 {
			t = title(d, fmt.Sprintf("Reload timeline: requests answered (line) and failed (red) per %d ms, vegeta at %d req/s, keep-alive POST; grey: a reload starts", s.BucketMS, s.Rate), "reload") + "\n\n" + s.Side
		}
		p := newPlot(t, "seconds since the load started", fmt.Sprintf("per %d ms", s.BucketMS))
		sec := float64(s.BucketMS) / 1000
		ok := make(plotter.XYs, len(s.OK))
		top := 1.0
		for j, v := range s.OK {
			ok[j] = plotter.XY{X: float64(j) * sec, Y: float64(v)}
			top = max(top, float64(v))
		}
		for _, v := range s.Failed {
			top = max(top, float64(v))
		}
		for _, r := range s.Reloads {
			l, err := plotter.NewLine(plotter.XYs{{X: r, Y: 0}, {X: r, Y: top}})
			if err != nil {
				return nil, err
			}
			l.Color = color.RGBA{170, 170, 170, 255}
			l.Width = vg.Points(0.5)
			p.Add(l)
		}
		if len(ok) > 0 {
			l, err := plotter.NewLine(ok)
			if err != nil {
				return nil, err
			}
			l.Color = colorOf(0)
			p.Add(l)
			p.Legend.Add("answered", l)
		}
		var fail plotter.XYs
		total := 0
		for j, v := range s.Failed {
			if v > 0 {
				fail = append(fail, plotter.XY{X: float64(j) * sec, Y: float64(v)})
				total += v
			}
		}
		if len(fail) > 0 {
			sc, err := plotter.NewScatter(fail)
			if err != nil {
				return nil, err
			}
			sc.Color = color.RGBA{213, 0, 0, 255}
			sc.Shape = draw.CircleGlyph{}
			p.Add(sc)
			p.Legend.Add(fmt.Sprintf("failed (%d in all)", total), sc)
		} else {
			p.Legend.Add("failed: none")
		}
		p.Y.Min, p.Y.Max = 0, top*1.45 // room for the legend
		p.X.Min, p.X.Max = 0, span
		rows = append(rows, []*plot.Plot{p})
	}
	h := vg.Length(len(rows))*2.2*vg.Inch + 0.8*vg.Inch
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadY: vg.Points(8), PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	return &figure{10 * vg.Inch, h, func(dc draw.Canvas) {
		cs := plot.Align(rows, tiles, dc)
		for i := range rows {
			rows[i][0].Draw(cs[i][0])
		}
	}}, nil
}

// plotBalance: per side, the connections of the fullest worker, the
// next, …, averaged over the rounds (each round's counts sorted), as
// horizontal bars; the error bars span the rounds' lowest to highest.
func plotBalance(d *benchData) (*figure, error) {
	if len(d.Balance) == 0 {
		return nil, nil
	}
	n := 0
	for _, s := range d.Balance {
		n = max(n, s.Workers)
	}
	p := newPlot(title(d, "Balance: keep-alive connections per worker, opened at once; bars: the fullest worker, the next, … (mean over the rounds)", "balance"),
		"connections", "")
	var names []string
	for i := range d.Balance {
		names = append(names, d.Balance[len(d.Balance)-1-i].Side)
	}
	width := vg.Points(min(60/float64(n), 12))
	most := 1.0
	for k := 0; k < n; k++ {
		vals := make(plotter.Values, len(d.Balance))
		for i := range d.Balance {
			s := d.Balance[len(d.Balance)-1-i] // first side on top
			sum, cnt := 0.0, 0
			for _, r := range s.Rounds {
				if k < len(r) {
					sum += float64(r[k])
					cnt++
				}
			}
			if cnt > 0 {
				vals[i] = sum / float64(cnt)
				most = max(most, vals[i])
			}
		}
		bc, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, err
		}
		bc.Horizontal = true
		bc.Color = colorOf(k)
		bc.LineStyle.Width = 0
		bc.Offset = width * vg.Length(float64(k)-float64(n-1)/2)
		p.Add(bc)
		p.Legend.Add(fmt.Sprintf("worker #%d by connections", k+1), bc)
	}
	p.NominalY(names...)
	p.X.Min, p.X.Max = 0, most*1.5 // room for the legend
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	h := vg.Length(len(d.Balance))*vg.Points(float64(n)*width.Points()+14) + 2*vg.Inch
	return canvas(10*vg.Inch, h, p), nil
}

// plotScale: a reload's time and the master's CPU per reload against the
// worker count (medians, log-log), with the first to third quartile.
func plotScale(d *benchData) (*figure, error) {
	var ss []scaleSeries
	for _, s := range d.Scale {
		if len(s.ServingMS) > 0 {
			ss = append(ss, s)
		}
	}
	if len(ss) == 0 {
		return nil, nil
	}
	slices.SortFunc(ss, func(a, b scaleSeries) int { return a.Workers - b.Workers })
	p := newPlot(title(d, "Scale: a reload's time and the master's CPU per reload against the workers (median; bars: first to third quartile)", "scale"),
		"workers", "ms per reload")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = workerTicks(ss), plot.LogTicks{Prec: -1}
	series := []struct {
		name string
		get  func(scaleSeries) []float64
	}{
		{"reload → new generation serving", func(s scaleSeries) []float64 { return s.ServingMS }},
		{"reload → old generation gone", func(s scaleSeries) []float64 { return s.GoneMS }},
		{"master's share of serving", func(s scaleSeries) []float64 { return s.ShareMS }},
		{"master's CPU", func(s scaleSeries) []float64 { return s.CPUMS }},
	}
	top := 0.0
	for i, se := range series {
		var xys plotter.XYs
		var errs plotter.YErrors
		for _, s := range ss {
			v := se.get(s)
			med := quantile(v, 0.5)
			if len(v) == 0 || !(med > 0) {
				continue // a log scale has no room for 0
			}
			lo, hi := quantile(v, 0.25), quantile(v, 0.75)
			top = max(top, hi)
			xys = append(xys, plotter.XY{X: float64(s.Workers), Y: med})
			errs = append(errs, struct{ Low, High float64 }{math.Max(0, med-math.Max(lo, med/100)), hi - med})
		}
		if len(xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		l.Color, pts.Color = colorOf(i), colorOf(i)
		p.Add(l, pts)
		eb, err := plotter.NewYErrorBars(struct {
			plotter.XYs
			plotter.YErrors
		}{xys, errs})
		if err != nil {
			return nil, err
		}
		eb.Color = colorOf(i)
		p.Add(eb)
		p.Legend.Add(se.name, l, pts)
	}
	p.Legend.Left = true
	if top > 0 {
		p.Y.Max = top * 8 // room for the legend
	}
	p.Add(plotter.NewGrid())
	return canvas(8*vg.Inch, 6*vg.Inch, p), nil
}

func workerTicks(ss []scaleSeries) plot.Ticker {
	var ts []plot.Tick
	for _, s := range ss {
		ts = append(ts, plot.Tick{Value: float64(s.Workers), Label: fmt.Sprint(s.Workers)})
	}
	return plot.ConstantTicks(ts)
}

// plotLoad: the distribution of the fast requests' times beside a slow
// one, per side, as the share of them slower than x (log-log, so that the
// tail a p99 sits in shows): one colour per app and balancer, solid for
// handoff's steer, dashed for its shared socket, dotted for Node's
// cluster and PM2.
func plotLoad(d *benchData) (*figure, error) {
	if len(d.Load) == 0 {
		return nil, nil
	}
	p := newPlot(title(d, "Load: fast requests beside a client looping on a slow one: share slower than x; solid: handoff steer, dashed: handoff shared, dotted: Node's cluster, PM2", "load"),
		"time of a fast request, connect to close (ms, log)", "share of fast requests slower (log)")
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	for i, s := range d.Load {
		var xys plotter.XYs
		n := len(s.FastMS)
		for j, v := range s.FastMS {
			if v > 0 {
				xys = append(xys, plotter.XY{X: v, Y: float64(n-j) / float64(n)})
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		l.Color = colorOf(i)
		switch {
		case strings.Contains(s.Side, "gunicorn"):
			l.Color = colorOf(0)
		case strings.HasPrefix(s.Side, "handoff"):
			l.Color = colorOf(1)
		case strings.HasPrefix(s.Side, "PM2"):
			l.Color = colorOf(3)
		default:
			l.Color = colorOf(2)
		}
		l.Width = vg.Points(1.5)
		switch {
		case s.Shared:
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		case !strings.HasPrefix(s.Side, "handoff"):
			l.Dashes = []vg.Length{vg.Points(1.5), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%d requests)", s.Side, max(s.Count, len(s.FastMS))), l)
	}
	p.Legend.Top, p.Legend.Left = true, false // the slow and rare corner is empty
	p.Add(plotter.NewGrid())
	return canvas(9*vg.Inch, 6*vg.Inch, p), nil
}
