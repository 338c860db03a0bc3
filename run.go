package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/control"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

func cmdRun(args []string, stderr io.Writer) error {
	o, err := parseRun(args, stderr)
	if err != nil {
		return err
	}
	closeInheritedFds()
	if _, err := workers.ResolveCommand(o.command[0]); err != nil {
		return err
	}
	log := newLogger(o, stderr)

	// Catch signals before anything starts, so none is lost; never
	// ignore one (an ignored signal stays ignored in every worker).
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigc)

	listeners := make([]*upgrade.Listener, 0, len(o.specs))
	defer func() {
		for _, l := range listeners {
			l.Remove()
		}
	}()
	for _, spec := range o.specs {
		l, err := upgrade.Bind(spec)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		log.Info("listening", "name", l.Name, "network", l.Network, "addr", l.Addr)
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sup, err := workers.New(workers.Config{
		Command:      o.command,
		Workers:      o.workers,
		Listeners:    listeners,
		ReadyDelay:   o.readyDelay,
		ReadyTimeout: o.readyTimeout,
		DrainTimeout: o.drainTimeout,
		StopSignal:   o.stopSignal,
		Strategy:     o.strategy,
		ReapOrphans:  os.Getpid() == 1,
		Logger:       log,
	})
	if err != nil {
		return err
	}

	ctl, err := control.Listen(controlPath(o.control), controlHandler(sup, stop), log.Named("control"))
	if err != nil {
		return err
	}
	ctlCtx, ctlStop := context.WithCancel(context.Background())
	ctlDone := make(chan struct{})
	go func() {
		defer close(ctlDone)
		ctl.Serve(ctlCtx)
	}()
	defer func() {
		ctlStop()
		<-ctlDone
		ctl.Listener().Close()
	}()

	go handleSignals(sigc, sup, stop, log)
	if err := sup.Run(ctx); err != nil {
		return err
	}
	log.Info("master exiting")
	return nil
}

// handleSignals maps signals to actions: SIGHUP reloads, SIGTERM and
// SIGINT stop gracefully, and a second SIGINT kills the workers at once.
func handleSignals(sigc <-chan os.Signal, sup *workers.Supervisor, stop context.CancelFunc, log hclog.Logger) {
	stopping := false
	for sig := range sigc {
		switch sig {
		case syscall.SIGHUP:
			log.Info("SIGHUP: reloading")
			sup.Reload()
		case syscall.SIGINT:
			if stopping {
				log.Warn("second SIGINT: killing workers now")
				sup.Kill()
				continue
			}
			fallthrough
		default:
			log.Info("stopping", "signal", sig.String())
			stopping = true
			stop()
		}
	}
}

// controlHandler answers control socket requests from the supervisor.
func controlHandler(sup *workers.Supervisor, stop context.CancelFunc) control.Handler {
	return func(ctx context.Context, req control.Request) control.Response {
		switch req.Cmd {
		case "status":
			return result(true, "", sup.Status())
		case "reload":
			if req.Master {
				return control.Response{Error: "master upgrade is not available in this build"}
			}
			c := sup.Reload()
			if !req.Wait {
				return result(true, "", map[string]bool{"queued": true})
			}
			select {
			case r := <-c:
				return result(r.OK, r.Error, r)
			case <-ctx.Done():
				return control.Response{Error: "gave up waiting: " + ctx.Err().Error()}
			}
		case "stop":
			stop()
			return result(true, "", map[string]bool{"stopping": true})
		}
		return control.Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
	}
}

func result(ok bool, errText string, v any) control.Response {
	b, err := json.Marshal(v)
	if err != nil {
		return control.Response{Error: "encode result: " + err.Error()}
	}
	return control.Response{OK: ok, Error: errText, Result: b}
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
