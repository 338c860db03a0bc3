package top

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/handoff-dev/handoff/workers"
)

// styles are the view's; the zero value (a plain snapshot) renders text
// as is.
type styles struct {
	title, head, phase, bad lipgloss.Style
}

func plainStyles() styles {
	s := lipgloss.NewStyle()
	return styles{s, s, s, s}
}

func termStyles() styles {
	s := lipgloss.NewStyle()
	return styles{
		title: s.Bold(true).Reverse(true),
		head:  s.Bold(true),
		phase: s.Bold(true).Foreground(lipgloss.Color("3")),
		bad:   s.Bold(true).Foreground(lipgloss.Color("1")),
	}
}

// Render is the view of st, the last status t took, at now.
func Render(st workers.Status, t *Tracker, now time.Time) string {
	return render(st, t, now, plainStyles())
}

func render(st workers.Status, t *Tracker, now time.Time, sty styles) string {
	var b strings.Builder
	renderMaster(&b, st, t, now, sty)
	renderReload(&b, st, t, now, sty)
	b.WriteString("\n")
	renderWorkers(&b, st, t, now, sty)
	if ev := t.Events(); len(ev) > 0 {
		b.WriteString("\n" + sty.head.Render("events") + "\n")
		for i := len(ev) - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "%s  %s\n", ev[i].At.Format("15:04:05"), ev[i].Text)
		}
	}
	return b.String()
}

// renderMaster writes the master's line, the generations and the
// listeners.
func renderMaster(b *strings.Builder, st workers.Status, t *Tracker, now time.Time, sty styles) {
	safe := t.safe
	serving := "starting"
	if st.Serving {
		serving = "serving"
	}
	title := fmt.Sprintf("generation %d %s, master pid %d, up %s", st.Generation, serving, st.PID, ago(st.Started, now))
	if st.Phase != workers.MasterServing && st.Phase != "" {
		title += ", master " + safe(string(st.Phase))
	}
	if st.Version != "" {
		title += " (handoff " + safe(st.Version) + ")"
	}
	b.WriteString(sty.title.Render(title) + "\n")

	gens := make([]string, 0, len(st.Generations))
	for _, g := range st.Generations {
		gens = append(gens, fmt.Sprintf("%d %s", g.Generation, sty.phase.Render(safe(string(g.Phase)))))
	}
	fmt.Fprintf(b, "generations: %s\n", strings.Join(gens, ", "))
	for _, l := range st.Listeners {
		how := l.Balance
		if l.Mechanism != "" {
			how += ", " + l.Mechanism + ", " + l.Selection
		}
		fmt.Fprintf(b, "listener %s %s://%s: %s\n", safe(l.Name), safe(l.Network), safe(l.Addr), safe(how))
	}
}

// renderReload writes the reload under way, if any, and the last one.
func renderReload(b *strings.Builder, st workers.Status, t *Tracker, now time.Time, sty styles) {
	safe := t.safe
	if s, ok := t.Step(now); ok {
		line := fmt.Sprintf("reload to generation %d: %s", s.Generation, sty.phase.Render(s.String()))
		if s.Phase != workers.RollStarting {
			line += fmt.Sprintf(" (new ready %d/%d", s.Ready, s.Workers)
			if s.Old > 0 {
				line += fmt.Sprintf(", old retired %d/%d", s.Retired, s.Old)
			}
			line += ")"
		}
		b.WriteString(line + "\n")
	} else if st.ReloadPending {
		b.WriteString("reload: pending\n")
	} else {
		b.WriteString("reload: none under way\n")
	}
	if r := st.LastReload; r != nil {
		what := "reload"
		if r.Master {
			what = "master upgrade"
		}
		if r.OK {
			fmt.Fprintf(b, "last %s: generation %d ok, took %s\n", what, r.Generation, r.Duration.Round(time.Millisecond))
		} else {
			fmt.Fprintf(b, "last %s: generation %d %s: %s\n", what, r.Generation, sty.bad.Render("rolled back"), safe(r.Error))
			if len(r.Stderr) > 0 {
				fmt.Fprintf(b, "  the last lines worker %d wrote to stderr:\n", r.FailedPID)
				for _, l := range r.Stderr {
					fmt.Fprintf(b, "    %s\n", safe(l))
				}
			}
		}
	} else {
		b.WriteString("last reload: none since this master started\n")
	}
}

// renderWorkers writes the workers' table and why any is away.
func renderWorkers(b *strings.Builder, st workers.Status, t *Tracker, now time.Time, sty styles) {
	safe := t.safe
	var tb strings.Builder
	tw := tabwriter.NewWriter(&tb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tCPU\tMEM\tQUEUE\tHELD")
	for _, w := range st.Workers {
		pid, up := strconv.Itoa(w.PID), ago(w.Since, now)
		if w.State == workers.Backoff {
			pid, up = "-", "-"
		}
		state := safe(string(w.State))
		if w.Away != "" {
			state += " (away)"
		}
		cpu := "-"
		if c, ok := t.CPU(w.PID); ok {
			cpu = fmt.Sprintf("%.0f%%", c)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", w.Slot, pid, w.Generation, state, up, w.Restarts,
			cpu, Size(w.RSS), safe(Counts(w.Queue)), safe(Counts(w.Held)))
	}
	tw.Flush()
	lines := strings.Split(strings.TrimSuffix(tb.String(), "\n"), "\n")
	b.WriteString(sty.head.Render(lines[0]) + "\n")
	for _, l := range lines[1:] {
		b.WriteString(l + "\n")
	}
	for _, w := range st.Workers {
		if w.Away != "" {
			fmt.Fprintf(b, "slot %d (pid %d) away: %s\n", w.Slot, w.PID, safe(w.Away))
		}
	}
}

// ago is how long ago t was, rounded for a glance.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// Counts shows a per-listener count (a worker's queue, or the
// connections it holds): one number, name=n for several, "-" for none.
func Counts(q map[string]int) string {
	switch len(q) {
	case 0:
		return "-"
	case 1:
		for _, n := range q {
			return strconv.Itoa(n)
		}
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("%s=%d", name, q[name])
	}
	return strings.Join(parts, ",")
}

// Size shows a byte count in MiB; "-" when not sampled.
func Size(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
}
