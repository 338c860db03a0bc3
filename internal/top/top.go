package top

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/workers"
)

// Options are what Run and RunPlain need.
type Options struct {
	// Fetch asks the master for its status (and recent events) once.
	Fetch func(ctx context.Context) (Status, error)
	// Interval is the time between polls (500ms if zero).
	Interval time.Duration
	// Safe escapes a string from the master for the terminal (nil: as
	// it is).
	Safe func(string) string
}

// Status is one poll's answer, as 'handoff status --json' prints it:
// the master's status and, from a master that keeps a history, its
// newest events, oldest first (nil from an older master).
type Status struct {
	workers.Status
	Events []history.Entry `json:"events"`
}

// fetchTimeout bounds one poll.
const fetchTimeout = 10 * time.Second

func (o Options) interval() time.Duration {
	if o.Interval <= 0 {
		return 500 * time.Millisecond
	}
	return o.Interval
}

// RunPlain prints a plain snapshot to out every interval until ctx is
// done or, with count > 0, count snapshots are printed. A master that
// cannot be reached at the first poll is an error; later failures are
// printed and polling goes on.
func RunPlain(ctx context.Context, o Options, out io.Writer, count int) error {
	t := NewTracker(o.Safe)
	tick := time.NewTicker(o.interval())
	defer tick.Stop()
	for i := 0; count <= 0 || i < count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		st, err := o.Fetch(fctx)
		cancel()
		now := time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && i == 0:
			return err
		case err != nil:
			fmt.Fprintf(out, "%s  %s\n\n", now.Format("15:04:05"), t.safe(err.Error()))
			continue
		}
		t.Update(st.Status, now)
		t.MasterEvents(st.Events)
		fmt.Fprintf(out, "--- %s\n%s\n", now.Format("15:04:05.000"), Render(st.Status, t, now))
	}
	return nil
}

// Run shows the live view on the terminal in and out until the user
// quits (q or ctrl-c) or ctx is done.
func Run(ctx context.Context, o Options, in io.Reader, out io.Writer) error {
	m := &model{o: o, t: NewTracker(o.Safe)}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// statusMsg is one poll's answer.
type statusMsg struct {
	st  Status
	err error
	at  time.Time
}

type model struct {
	o             Options
	t             *Tracker
	st            *workers.Status
	err           error
	width, height int
}

// poll returns the command that fetches the status after wait.
func (m *model) poll(wait time.Duration) tea.Cmd {
	fetch := func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		st, err := m.o.Fetch(ctx)
		return statusMsg{st, err, time.Now()}
	}
	if wait <= 0 {
		return fetch
	}
	return tea.Tick(wait, func(time.Time) tea.Msg { return fetch() })
}

func (m *model) Init() tea.Cmd { return m.poll(0) }

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "Q", "ctrl+c", "esc":
			return m, tea.Quit
		}
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, tea.ClearScreen
	case statusMsg:
		m.err = msg.err
		if msg.err == nil {
			m.t.Update(msg.st.Status, msg.at)
			m.t.MasterEvents(msg.st.Events)
			m.st = &msg.st.Status
		}
		return m, m.poll(m.o.interval())
	}
	return m, nil
}

func (m *model) View() string {
	var view string
	now := time.Now()
	switch {
	case m.st == nil && m.err == nil:
		view = "asking the master for its status…\n"
	case m.st == nil:
		view = "handoff top: " + m.t.safe(m.err.Error()) + "\n"
	default:
		view = render(*m.st, m.t, now, termStyles())
		if m.err != nil {
			view += "\n" + termStyles().bad.Render("last poll failed: "+m.t.safe(m.err.Error())) + "\n"
		}
	}
	view += "\nq quits"
	s := lipgloss.NewStyle()
	if m.width > 0 {
		s = s.MaxWidth(m.width)
	}
	if m.height > 0 {
		s = s.MaxHeight(m.height)
	}
	return s.Render(view)
}
