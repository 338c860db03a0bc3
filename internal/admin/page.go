package admin

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/history"
)

var (
	//go:embed page.html
	pageHTML string
	//go:embed page.js
	pageJS string
)

// pageHistory is how many entries GET / shows, newest first.
const pageHistory = 100

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("15:04:05")
	},
	"dur": fmtDur,
	"uptime": func(since, now time.Time) string {
		if since.IsZero() {
			return ""
		}
		return fmtDur(now.Sub(since))
	},
	"served": func(g history.Generation, now time.Time) string {
		if g.Until.IsZero() {
			return fmtDur(now.Sub(g.Since)) + " (serving)"
		}
		return fmtDur(g.Until.Sub(g.Since))
	},
	"mb": func(b int64) string {
		if b == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	},
	"queue": func(q map[string]int) string {
		parts := make([]string, 0, len(q))
		for k, v := range q {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(parts)
		return strings.Join(parts, " ")
	},
	"slot": func(s int) string {
		if s < 0 {
			return ""
		}
		return fmt.Sprint(s)
	},
	"outcome": func(e history.Entry) template.HTML {
		if e.Kind != history.KindReload && e.Kind != history.KindUpgrade {
			return template.HTML(template.HTMLEscapeString(string(e.Kind)))
		}
		if e.OK {
			return template.HTML(string(e.Kind) + ` <span class="ok">ok</span>`)
		}
		return template.HTML(string(e.Kind) + ` <span class="bad">rolled back</span>`)
	},
	"chart": chartSVG,
}).Parse(pageHTML))

// fmtDur is d, short: 850ms, 4.2s, 3m12s, 5h07m.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
}

// chartSVG draws one slot's queue over the last queueWindow, as page.js
// does.
func chartSVG(s queueSeries, now time.Time) template.HTML {
	const w, h = 180, 40
	max := 1
	for _, v := range s.V {
		if v > max {
			max = v
		}
	}
	var pts strings.Builder
	for i, t := range s.T {
		x := w - float64(now.UnixMilli()-t)/float64(queueWindow.Milliseconds())*w
		y := h - 2 - float64(s.V[i])/float64(max)*(h-4)
		fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
	}
	cur := 0
	if n := len(s.V); n > 0 {
		cur = s.V[n-1]
	}
	return template.HTML(fmt.Sprintf(`<svg width="%d" height="%d"><title>slot %d</title><polyline fill="none" stroke="#36c" points="%s"/><text x="3" y="12" font-size="10">slot %d: %d</text></svg>`,
		w, h, s.Slot, strings.TrimSpace(pts.String()), s.Slot, cur))
}

type pageData struct {
	frame
	History []history.Entry
	// Reloads is, by generation, the reload that started it.
	Reloads map[int]*history.Entry
	Script  template.JS
}

// servePage renders the status page: a complete snapshot, readable
// without JavaScript; its script then follows /events.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	st, err := s.snapshot(s.opts.StatusTimeout)
	if err != nil {
		plain(w, http.StatusInternalServerError, err.Error())
		return
	}
	d := pageData{frame: frame{Now: time.Now(), Status: st, Generations: s.hist.Generations(), Queues: s.live.charts()}, Script: template.JS(pageJS)}
	last := s.hist.Last()
	from := uint64(0)
	if last > pageHistory {
		from = last - pageHistory
	}
	d.History, _ = s.hist.Since(from, 0)
	d.Reloads = map[int]*history.Entry{}
	for _, e := range d.History {
		if e.Kind == history.KindReload || e.Kind == history.KindUpgrade {
			d.Reloads[e.Generation] = &e
		}
	}
	for i, j := 0, len(d.History)-1; i < j; i, j = i+1, j-1 {
		d.History[i], d.History[j] = d.History[j], d.History[i]
	}
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, d); err != nil {
		plain(w, http.StatusInternalServerError, err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	// The page runs its own inline script and loads nothing else.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	w.Write(b.Bytes())
}
