package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/handoff-dev/handoff/control"
	"github.com/handoff-dev/handoff/workers"
)

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status")
	ctl := controlFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("status: unexpected argument %q", fs.Arg(0))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := request(ctx, *ctl, control.Request{Cmd: "status"})
	if err != nil {
		return err
	}
	if *asJSON {
		fmt.Fprintln(stdout, string(resp.Result))
		return nil
	}
	var st workers.Status
	if err := json.Unmarshal(resp.Result, &st); err != nil {
		return fmt.Errorf("status: malformed reply: %w", err)
	}
	printStatus(stdout, st)
	return nil
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
		fmt.Fprintf(w, "listener %s %s://%s\n", l.Name, l.Network, l.Addr)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tSTATUS")
	for _, ws := range st.Workers {
		pid, up := fmt.Sprint(ws.PID), since(ws.Since)
		if ws.State == workers.Backoff {
			pid, up = "-", "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\n", ws.Slot, pid, ws.Generation, ws.State, up, ws.Restarts, ws.Status)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if r := st.LastReload; r != nil {
		result := "ok"
		if !r.OK {
			result = "FAILED: " + r.Error
		}
		fmt.Fprintf(w, "last reload: generation %d, %s, took %s\n", r.Generation, result, r.Duration.Round(time.Millisecond))
	} else {
		fmt.Fprintln(w, "last reload: none")
	}
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reload")
	ctl := controlFlag(fs)
	wait := fs.Bool("wait", false, "wait until the reload is over; exit 1 if it was rolled back")
	timeout := fs.Duration("timeout", 0, "with --wait, give up after this long (0: no limit)")
	master := fs.Bool("master", false, "upgrade the master process itself, not only the workers")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("reload: unexpected argument %q", fs.Arg(0))}
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	resp, err := request(ctx, *ctl, control.Request{Cmd: "reload", Wait: *wait, Master: *master})
	if err != nil {
		return err
	}
	if !*wait {
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

func cmdStop(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("stop")
	ctl := controlFlag(fs)
	wait := fs.Bool("wait", false, "wait until the master has exited (for ExecStop=)")
	timeout := fs.Duration("timeout", 0, "with --wait, give up after this long (0: no limit)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := request(ctx, *ctl, control.Request{Cmd: "stop"})
	if err != nil {
		return err
	}
	if !*wait {
		fmt.Fprintln(stdout, "stopping")
		return nil
	}
	var r struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(resp.Result, &r); err != nil || r.PID <= 0 {
		return fmt.Errorf("stop: reply does not name the master's pid")
	}
	var deadline <-chan time.Time
	if *timeout > 0 {
		deadline = time.After(*timeout)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for syscall.Kill(r.PID, 0) == nil {
		select {
		case <-deadline:
			return fmt.Errorf("stop: master %d still running after %s", r.PID, *timeout)
		case <-tick.C:
		}
	}
	fmt.Fprintf(stdout, "master %d stopped\n", r.PID)
	return nil
}

// request sends req and turns an error reply into an error.
func request(ctx context.Context, ctlFlag string, req control.Request) (control.Response, error) {
	resp, err := control.Do(ctx, controlPath(ctlFlag), req)
	if err != nil {
		return resp, err
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = "failed"
		}
		return resp, errors.New(req.Cmd + ": " + resp.Error)
	}
	return resp, nil
}
