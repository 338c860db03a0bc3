package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/internal/top"
	"github.com/handoff-dev/handoff/workers"
)

// Exit statuses of the client commands beyond main's 0 (success), 1
// (failure: the master cannot be reached, refused the request, or a
// reload was rolled back) and 2 (usage).
const (
	// exitNotServing is status's answer for a master that answers but
	// does not serve (starting, stopping, or no generation serving),
	// as 'systemctl is-active' exits 3 for a unit that is not active.
	exitNotServing = 3
	// exitStillRunning is for 'reload --wait --timeout D' and 'stop
	// --wait --timeout D' that gave up waiting while the master goes on
	// (as timeout(1) exits 124).
	exitStillRunning = 124
)

// exitError is an error with its own exit status. An empty message
// prints nothing (what there was to say went to stdout).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// ExitCode is the exit status for e.
func (e exitError) ExitCode() int { return e.code }

// cmdStatus prints the master's status. Its exit status says whether the
// service is up, as 'systemctl is-active' does, so that scripts and
// health checks need not parse the table:
//
//	0  the master answers and serves (a generation serving, the master
//	   neither starting nor stopping)
//	1  the master cannot be reached (no socket, nobody listening, no
//	   answer within 10s, an untrusted control directory) or refused
//	3  the master answers but does not serve: starting, stopping, or no
//	   generation serving
//
// With --json too: the JSON is printed first.
func cmdStatus(ctl string, asJSON bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := request(ctx, ctl, control.Request{Cmd: "status"})
	if err != nil {
		return err
	}
	if asJSON {
		fmt.Fprintln(stdout, jsonTermSafe(resp.Result))
	}
	var st workers.Status
	if err := json.Unmarshal(resp.Result, &st); err != nil {
		return fmt.Errorf("status: malformed reply: %w", err)
	}
	if !asJSON {
		printStatus(stdout, st)
	}
	if code := statusExit(st); code != 0 {
		return exitError{code: code}
	}
	return nil
}

// statusExit is status's exit status for a master that answered with st
// (see cmdStatus): 0 if it serves, exitNotServing if not.
func statusExit(st workers.Status) int {
	switch {
	case !st.Serving, st.Phase == workers.MasterStarting, st.Phase == workers.MasterStopping:
		return exitNotServing
	}
	return 0
}

func printStatus(w io.Writer, st workers.Status) {
	serving := "starting"
	if st.Serving {
		serving = "serving"
	}
	fmt.Fprintf(w, "master pid %d", st.PID)
	if st.Version != "" {
		fmt.Fprintf(w, " (handoff %s)", termSafe(st.Version))
	}
	fmt.Fprintf(w, ", up %s\n", since(st.Started))
	fmt.Fprintf(w, "generation %d %s", st.Generation, serving)
	if st.Reloading > 0 {
		fmt.Fprintf(w, ", reloading to generation %d", st.Reloading)
	}
	fmt.Fprintln(w)
	for _, l := range st.Listeners {
		how := l.Balance
		if l.Mechanism != "" {
			how += ", " + l.Mechanism + ", " + l.Selection
		}
		fmt.Fprintf(w, "listener %s %s://%s (%s)\n", termSafe(l.Name), termSafe(l.Network), termSafe(l.Addr), termSafe(how))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tQUEUE\tRSS\tSTATUS")
	for _, ws := range st.Workers {
		pid, up := fmt.Sprint(ws.PID), since(ws.Since)
		if ws.State == workers.Backoff {
			pid, up = "-", "-"
		}
		state := string(ws.State)
		if ws.Away != "" {
			state += " (away)" // gets no new connections: see below
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", ws.Slot, pid, ws.Generation, state, up, ws.Restarts, termSafe(top.Counts(ws.Queue)), top.Size(ws.RSS), termSafe(ws.Status))
	}
	tw.Flush()
	for _, ws := range st.Workers {
		if ws.State == workers.Backoff && ws.LastExit != "" {
			fmt.Fprintf(w, "slot %d waits to restart: its last worker %s\n", ws.Slot, termSafe(ws.LastExit))
			writeStderrLines(w, "  its last lines on stderr:", ws.LastStderr)
		}
		if ws.Away != "" {
			fmt.Fprintf(w, "slot %d (pid %d) gets no new connections: %s\n", ws.Slot, ws.PID, termSafe(ws.Away))
		}
	}
	fmt.Fprintln(w)
	if r := st.LastReload; r != nil {
		result := "ok"
		if !r.OK {
			result = "FAILED: " + termSafe(r.Error)
		}
		what := "reload"
		if r.Master {
			what = "master upgrade"
		}
		fmt.Fprintf(w, "last %s: generation %d, %s, took %s\n", what, r.Generation, result, r.Duration.Round(time.Millisecond))
		if !r.OK {
			if tail := failedWorker(*r); tail != "" {
				fmt.Fprintln(w, tail)
			}
		}
	} else {
		// A master started by an upgrade knows nothing of the reloads
		// before it (nor of the upgrade itself): say so rather than
		// "none".
		fmt.Fprintln(w, "last reload: none since this master started")
	}
}

type reloadOptions struct {
	control      *string
	wait, master bool
	timeout      time.Duration
	// json, with wait, reports the phases and the result as JSON lines.
	json bool
	// tty is set when stdout is a terminal: the progress is one line
	// per phase, updated in place.
	tty bool
}

func cmdReload(o reloadOptions, stdout io.Writer) error {
	if o.timeout < 0 {
		return usageError{fmt.Errorf("reload: --timeout %s: must not be negative", o.timeout)}
	}
	if o.json && !o.wait {
		return usageError{errors.New("reload: --json needs --wait (the phases and result are those of a reload waited for)")}
	}
	ctx := context.Background()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	var prog *reloadProgress
	if o.wait {
		prog = startProgress(ctx, *o.control, o, stdout)
	}
	resp, err := request(ctx, *o.control, control.Request{Cmd: "reload", Wait: o.wait, Master: o.master})
	prog.stop()
	if err != nil && o.wait && o.timeout > 0 && errors.Is(err, context.DeadlineExceeded) {
		// The request went out and no answer came in time: the
		// master goes on with the reload (or has yet to take the
		// request). Not a rollback: say so, with its own status.
		prog.end("gave up", fmt.Sprintf("gave up waiting after %s", o.timeout), nil)
		return exitError{code: exitStillRunning, msg: fmt.Sprintf("reload: still running after %s: gave up waiting; the master goes on with it ('handoff status' shows how far it is)", o.timeout)}
	}
	if err != nil {
		prog.closeLine()
		if o.wait && len(resp.Result) > 0 && !resp.OK {
			var r workers.ReloadResult
			if json.Unmarshal(resp.Result, &r) == nil {
				prog.end("rolled back", "rolled back: "+termSafe(r.Error), &r)
				if tail := failedWorker(r); tail != "" {
					// Under the error: why the new worker failed.
					err = fmt.Errorf("%w\n%s", err, tail)
				}
			}
		}
		return err
	}
	if !o.wait {
		fmt.Fprintln(stdout, "reload requested")
		return nil
	}
	var r workers.ReloadResult
	if err := json.Unmarshal(resp.Result, &r); err != nil {
		return fmt.Errorf("reload: malformed reply: %w", err)
	}
	prog.end("done", fmt.Sprintf("done in %.1f s", r.Duration.Seconds()), &r)
	if o.json {
		return nil
	}
	fmt.Fprintf(stdout, "generation %d serving after %s (reload took %s)\n", r.Generation,
		r.Serving.Round(time.Millisecond), r.Duration.Round(time.Millisecond))
	if r.Master {
		if st, ok := newMaster(ctx, *o.control); ok {
			fmt.Fprintf(stdout, "master pid %d runs handoff %s\n", st.PID, termSafe(st.Version))
		}
	}
	return nil
}

// failedWorker describes the worker whose end failed a reload, for the
// lines under its error: the last lines it wrote to stderr, or, when the
// master did not read its stderr (--worker-output inherit), where they
// went. "" if no worker's end failed it.
func failedWorker(r workers.ReloadResult) string {
	var b strings.Builder
	switch {
	case len(r.Stderr) > 0:
		writeStderrLines(&b, fmt.Sprintf("  the last lines worker %d wrote to stderr:", r.FailedPID), r.Stderr)
	case r.FailedPID > 0 && r.StderrInherited:
		fmt.Fprintf(&b, "  worker %d's stderr went to the master's (under systemd: journalctl _PID=%d)\n", r.FailedPID, r.FailedPID)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// writeStderrLines writes head and then lines, indented under it,
// escaped for a terminal; nothing if there are no lines.
func writeStderrLines(w io.Writer, head string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, head)
	for _, l := range lines {
		fmt.Fprintf(w, "    %s\n", termSafe(l))
	}
}

// newMaster asks for the status of the master that took over, which
// answers on the control socket once the old one has handed over (the
// old one, still retiring, may answer a moment longer: its phase says
// so). ok is false if none answered within a few seconds.
func newMaster(ctx context.Context, ctl string) (st workers.Status, ok bool) {
	for range 30 {
		resp, err := request(ctx, ctl, control.Request{Cmd: "status"})
		if err == nil && json.Unmarshal(resp.Result, &st) == nil && st.Phase != workers.MasterHandedOver && st.Version != "" {
			return st, true
		}
		select {
		case <-ctx.Done():
			return st, false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return st, false
}

// progressInterval is how often 'reload --wait' asks for the status
// while it waits.
const progressInterval = 100 * time.Millisecond

// progressDelay is how long 'reload --wait' waits before its first
// status request.
const progressDelay = 300 * time.Millisecond

// reloadProgress reports a reload's phases while 'reload --wait' waits
// for its reply: it polls the status on a connection of its own.
type reloadProgress struct {
	o       reloadOptions
	out     io.Writer
	start   time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	p       top.Progress
	phase   string // the last phase reported, with its generation
	pending bool   // tty: a line is open (no newline yet)
}

// progressJSON is one line of 'reload --wait --json'.
type progressJSON struct {
	Phase           string                `json:"phase"`
	Generation      int                   `json:"generation,omitempty"`
	Ready           *int                  `json:"ready,omitempty"`
	Workers         int                   `json:"workers,omitempty"`
	Retired         *int                  `json:"retired,omitempty"`
	Old             int                   `json:"old,omitempty"`
	ProbationLeftMS *float64              `json:"probation_left_ms,omitempty"`
	ElapsedMS       float64               `json:"elapsed_ms"`
	Text            string                `json:"text"`
	Result          *workers.ReloadResult `json:"result,omitempty"`
}

func startProgress(ctx context.Context, ctl string, o reloadOptions, out io.Writer) *reloadProgress {
	ctx, cancel := context.WithCancel(ctx)
	p := &reloadProgress{o: o, out: out, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		// A reload over within progressDelay reports only its end and
		// costs the master no status request.
		first := time.NewTimer(progressDelay)
		defer first.Stop()
		select {
		case <-ctx.Done():
			return
		case <-first.C:
		}
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for ctx.Err() == nil {
			resp, err := control.Do(ctx, control.Path(ctl), control.Request{Cmd: "status"})
			var st workers.Status
			if err == nil && resp.OK && json.Unmarshal(resp.Result, &st) == nil && ctx.Err() == nil {
				p.show(st)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// show reports st's step if its phase is new (on a terminal: the line
// of the phase, updated).
func (p *reloadProgress) show(st workers.Status) {
	now := time.Now()
	s, ok := p.p.Step(st, now)
	if !ok || s.Phase == workers.RollStarting && s.Workers == 0 && !st.Rollover.Master {
		return // not under way, or its size not known yet
	}
	key := fmt.Sprintf("%d %s", s.Generation, s.Phase)
	changed := key != p.phase
	p.phase = key
	switch {
	case p.o.json:
		if changed {
			ready, retired := s.Ready, s.Retired
			j := progressJSON{Phase: string(s.Phase), Generation: s.Generation, Ready: &ready, Workers: s.Workers,
				Retired: &retired, Old: s.Old, ElapsedMS: msSince(p.start, now), Text: s.String()}
			if s.Phase == workers.RollProbation {
				left := float64(s.ProbationLeft.Microseconds()) / 1000
				j.ProbationLeftMS = &left
			}
			p.writeJSON(j)
		}
	case p.o.tty:
		if changed && p.pending {
			fmt.Fprintln(p.out)
		}
		fmt.Fprintf(p.out, "\r\x1b[K%s", s)
		p.pending = true
	case changed:
		fmt.Fprintln(p.out, s)
	}
}

// stop ends the polling and waits for it. A nil p does nothing.
func (p *reloadProgress) stop() {
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

// end reports how the reload ended: phase "done", "rolled back" or "gave
// up", text for people, r the master's result if there is one.
func (p *reloadProgress) end(phase, text string, r *workers.ReloadResult) {
	if p == nil {
		return
	}
	now := time.Now()
	switch {
	case p.o.json:
		p.writeJSON(progressJSON{Phase: phase, ElapsedMS: msSince(p.start, now), Text: text, Result: r})
	case p.o.tty:
		fmt.Fprintf(p.out, "\r\x1b[K%s\n", text)
		p.pending = false
	default:
		fmt.Fprintln(p.out, text)
	}
}

// closeLine ends the line a terminal's progress left open, so that an
// error printed next starts a line of its own.
func (p *reloadProgress) closeLine() {
	if p != nil && p.pending {
		fmt.Fprintln(p.out)
		p.pending = false
	}
}

func (p *reloadProgress) writeJSON(j progressJSON) {
	b, err := json.Marshal(j)
	if err != nil {
		return
	}
	fmt.Fprintln(p.out, jsonTermSafe(b))
}

func msSince(t, now time.Time) float64 { return float64(now.Sub(t).Microseconds()) / 1000 }

type stopOptions struct {
	control *string
	wait    bool
	timeout time.Duration
}

func cmdStop(o stopOptions, stdout io.Writer) error {
	if o.timeout < 0 {
		return usageError{fmt.Errorf("stop: --timeout %s: must not be negative", o.timeout)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := request(ctx, *o.control, control.Request{Cmd: "stop"})
	if err != nil {
		return err
	}
	if !o.wait {
		fmt.Fprintln(stdout, "stopping")
		return nil
	}
	var r struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(resp.Result, &r); err != nil || r.PID <= 0 {
		return fmt.Errorf("stop: reply does not name the master's pid")
	}
	wctx := context.Background()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, o.timeout)
		defer cancel()
	}
	if err := control.WaitExit(wctx, r.PID); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return exitError{code: exitStillRunning, msg: fmt.Sprintf("stop: master %d still running after %s", r.PID, o.timeout)}
		}
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintf(stdout, "master %d stopped\n", r.PID)
	return nil
}

// cmdScale asks the master for the workers arg says and prints its
// answer. arg is a number (absolute), +N or -N (relative to the running
// generation's workers, read from the status first), or auto (this
// machine's usable CPUs, GOMAXPROCS, worked out here: the rule the master
// applies to --workers auto when it starts).
func cmdScale(ctl string, arg string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, note, err := scaleTarget(ctx, ctl, arg)
	if err != nil {
		return err
	}
	resp, err := request(ctx, ctl, control.Request{Cmd: "scale", Workers: n})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "scaling to %d workers%s\n", n, note)
	if len(resp.Result) > 0 && string(resp.Result) != "null" {
		fmt.Fprintln(stdout, jsonTermSafe(resp.Result))
	}
	return nil
}

// scaleTarget is the number of workers scale's arg asks for, and a note
// on how it was worked out (" (auto: ...)", " (3+1)").
func scaleTarget(ctx context.Context, ctl, arg string) (n int, note string, err error) {
	if arg == "" || arg[0] != '+' && arg[0] != '-' {
		n, auto, err := config.ParseWorkers(arg)
		if err != nil {
			return 0, "", usageError{fmt.Errorf("scale %q: %v, or +N/-N to add or remove workers", arg, err)}
		}
		if auto {
			note = fmt.Sprintf(" (auto: the %d CPUs this machine lets handoff use)", n)
		}
		return n, note, nil
	}
	delta, err := strconv.Atoi(arg)
	if err != nil || delta == 0 {
		return 0, "", usageError{fmt.Errorf("scale %q: want +N or -N (N from 1 to %d) to add or remove workers, a number, or auto", arg, control.MaxWorkers)}
	}
	resp, err := request(ctx, ctl, control.Request{Cmd: "status"})
	if err != nil {
		return 0, "", err
	}
	var st workers.Status
	if err := json.Unmarshal(resp.Result, &st); err != nil {
		return 0, "", fmt.Errorf("status: malformed reply: %w", err)
	}
	if st.Rollover != nil || st.Reloading > 0 {
		return 0, "", fmt.Errorf("scale %s: a reload to generation %d is under way; scale once it is over", arg, st.Reloading)
	}
	cur := 0
	for _, w := range st.Workers {
		if w.Generation == st.Generation {
			cur++
		}
	}
	n = cur + delta
	if n < 1 || n > control.MaxWorkers {
		return 0, "", usageError{fmt.Errorf("scale %s: generation %d runs %d workers; %d is not from 1 to %d", arg, st.Generation, cur, n, control.MaxWorkers)}
	}
	return n, fmt.Sprintf(" (%d%+d)", cur, delta), nil
}

// request sends req and turns an error reply into an error.
func request(ctx context.Context, ctlFlag string, req control.Request) (control.Response, error) {
	path := control.Path(ctlFlag)
	if err := control.CheckPath(path); err != nil {
		if ctlFlag != "" {
			return control.Response{}, usageError{fmt.Errorf("--control %q: %v", ctlFlag, err)}
		}
		return control.Response{}, fmt.Errorf("control socket %s: %v", path, err)
	}
	resp, err := control.Do(ctx, path, req)
	if err != nil {
		return resp, err
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = "failed"
		}
		return resp, errors.New(req.Cmd + ": " + termSafeLines(resp.Error))
	}
	return resp, nil
}

// termSafe is s fit for a terminal: control characters (escape
// sequences, carriage returns, tabs that would break the table), C1
// controls, Unicode's bidirectional overrides and invalid UTF-8 show as
// Go escapes (\x1b, \u202e); the rest, backslashes included, as is.
// Workers set their STATUS= text, and the master's replies carry it: a
// worker must not be able to drive the terminal of whoever runs
// 'handoff status'.
func termSafe(s string) string {
	if !needsEscape(s, false) {
		return s
	}
	return escape(s, false)
}

// termSafeLines is termSafe, except that newlines are kept: an error of
// several lines is printed as several lines.
func termSafeLines(s string) string {
	if !needsEscape(s, true) {
		return s
	}
	return escape(s, true)
}

func needsEscape(s string, keepNewline bool) bool {
	for _, r := range s {
		if unsafeRune(r, keepNewline) {
			return true
		}
	}
	return false
}

// unsafeRune reports whether r must be escaped. utf8.RuneError stands
// for an invalid byte (or U+FFFD itself, escaped too: harmless).
func unsafeRune(r rune, keepNewline bool) bool {
	switch {
	case r == '\n':
		return !keepNewline
	case r == utf8.RuneError, unicode.IsControl(r):
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true // bidirectional controls: they reorder what follows
	}
	return false
}

func escape(s string, keepNewline bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafeRune(r, keepNewline):
			b.WriteString(s[i : i+n])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// jsonTermSafe is the JSON text b fit for a terminal, and the same JSON:
// encoding/json leaves DEL, C1 controls (U+009B is a CSI) and bidi
// controls raw in strings, so they are written as \u escapes, as are C0
// controls other than the whitespace between tokens (raw, they are not
// valid JSON in a string anyway); invalid UTF-8 becomes \ufffd.
func jsonTermSafe(b []byte) string {
	var out strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			out.WriteString(`\ufffd`)
		case r == '\n', r == '\t', r == '\r', !unsafeRune(r, false):
			out.Write(b[i : i+n])
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
		i += n
	}
	return out.String()
}

// topOptions are 'handoff top”s settings.
type topOptions struct {
	control  *string
	interval time.Duration
	count    int
	// plain prints snapshots even on a terminal.
	plain bool
}

// cmdTop runs the live view on a terminal (stdin and stdout both), else
// prints a plain snapshot every interval: count of them, or until
// killed.
func cmdTop(o topOptions, stdout io.Writer) error {
	if o.interval <= 0 {
		return usageError{fmt.Errorf("top: --interval %s: must be positive", o.interval)}
	}
	if o.count < 0 {
		return usageError{fmt.Errorf("top: --count %d: must not be negative", o.count)}
	}
	ctl := *o.control
	path := control.Path(ctl)
	if err := control.CheckPath(path); err != nil {
		if ctl != "" {
			return usageError{fmt.Errorf("--control %q: %v", ctl, err)}
		}
		return fmt.Errorf("control socket %s: %v", path, err)
	}
	opts := top.Options{
		Interval: o.interval,
		Safe:     termSafe,
		Fetch: func(ctx context.Context) (top.Status, error) {
			var st top.Status
			resp, err := request(ctx, ctl, control.Request{Cmd: "status"})
			if err != nil {
				return st, err
			}
			if err := json.Unmarshal(resp.Result, &st); err != nil {
				return st, fmt.Errorf("status: malformed reply: %w", err)
			}
			return st, nil
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !o.plain && o.count == 0 && isTerminal(os.Stdin) && isTerminal(stdout) {
		return top.Run(ctx, opts, os.Stdin, stdout)
	}
	return top.RunPlain(ctx, opts, stdout, o.count)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// since formats how long ago t was, for the status table.
func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}
