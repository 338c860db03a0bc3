package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/handoff-dev/handoff/control"
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
	fmt.Fprintf(w, "master pid %d, up %s\n", st.PID, since(st.Started))
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
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", ws.Slot, pid, ws.Generation, state, up, ws.Restarts, termSafe(queueText(ws.Queue)), sizeText(ws.RSS), termSafe(ws.Status))
	}
	tw.Flush()
	for _, ws := range st.Workers {
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
		fmt.Fprintf(w, "last reload: generation %d, %s, took %s\n", r.Generation, result, r.Duration.Round(time.Millisecond))
	} else {
		fmt.Fprintln(w, "last reload: none")
	}
}

type reloadOptions struct {
	control      *string
	wait, master bool
	timeout      time.Duration
}

func cmdReload(o reloadOptions, stdout io.Writer) error {
	if o.timeout < 0 {
		return usageError{fmt.Errorf("reload: --timeout %s: must not be negative", o.timeout)}
	}
	ctx := context.Background()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	resp, err := request(ctx, *o.control, control.Request{Cmd: "reload", Wait: o.wait, Master: o.master})
	if err != nil && o.wait && o.timeout > 0 && errors.Is(err, context.DeadlineExceeded) {
		// The request went out and no answer came in time: the
		// master goes on with the reload (or has yet to take the
		// request). Not a rollback: say so, with its own status.
		return exitError{code: exitStillRunning, msg: fmt.Sprintf("reload: still running after %s: gave up waiting; the master goes on with it ('handoff status' shows how far it is)", o.timeout)}
	}
	if err != nil {
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
	fmt.Fprintf(stdout, "generation %d serving after %s (reload took %s)\n", r.Generation,
		r.Serving.Round(time.Millisecond), r.Duration.Round(time.Millisecond))
	return nil
}

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

// cmdScale asks the master for n workers and prints its answer.
func cmdScale(ctl string, n int, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := request(ctx, ctl, control.Request{Cmd: "scale", Workers: n})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "scaling to %d workers\n", n)
	if len(resp.Result) > 0 && string(resp.Result) != "null" {
		fmt.Fprintln(stdout, jsonTermSafe(resp.Result))
	}
	return nil
}

// request sends req and turns an error reply into an error.
func request(ctx context.Context, ctlFlag string, req control.Request) (control.Response, error) {
	path := controlPath(ctlFlag)
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

// queueText shows a worker's accept queues: one number, or name=n for
// several steered listeners; "-" without any.
func queueText(q map[string]int) string {
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

// sizeText shows a byte count in MiB; "-" when not sampled.
func sizeText(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
}
