package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/admin"
	"github.com/handoff-dev/handoff/control"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

func cmdRun(args []string, stderr io.Writer) error {
	o, err := parseRun(args, stderr)
	if err != nil {
		return err
	}
	closeInheritedFds()
	// The master only supervises: one P is plenty, and spares it the
	// idle-P spinning and thread wake-ups that dominate its CPU time on
	// virtual machines, where each context switch is dear. (The workers'
	// count, "auto", was taken from GOMAXPROCS before this; workers do
	// not inherit it: it is not in the environment.)
	runtime.GOMAXPROCS(1)
	if _, err := workers.ResolveCommand(o.Command[0]); err != nil {
		return err
	}
	logMu := &sync.Mutex{}
	sink := newLogSink(o, stderr) // a log reader that goes away never stops the master
	stderr = sink                 // the workers' forwarded output goes through it too
	log := newLogger(o, stderr, logMu)
	for _, w := range o.Warnings {
		log.Warn(w)
	}

	// Catch signals before anything starts, so none is lost; never
	// ignore one (an ignored signal stays ignored in every worker).
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(sigc)

	activated, err := systemd.ActivationSockets()
	if err != nil {
		return err
	}
	byName := make(map[string]int, len(activated))
	for _, s := range activated {
		byName[s.Name] = s.Fd
	}
	master, err := upgrade.NewMaster(upgrade.Options{
		PIDFile:        o.PIDFile,
		UpgradeTimeout: o.ReadyTimeout + 30*time.Second,
	})
	if err != nil {
		return err
	}
	// Until the supervisor runs, a failure undoes what was set up, in
	// reverse: one line of error, nothing left behind.
	var undo []func()
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	undo = append(undo, master.Stop)

	// The control socket first: "in use by another handoff" must stop
	// us before we bind or start anything.
	ctlPath := controlPath(o.Control)
	ctlLn, err := master.ControlListener(ctlPath, func() (*net.UnixListener, error) { return control.ListenUnix(ctlPath) })
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		ctlLn.Close()
		if !master.Inherited() {
			os.Remove(ctlPath)
		}
	})

	// The admin endpoint's address too (taken over from the previous
	// master, or bound): an address in use is a start-up error.
	var adminLn net.Listener
	adminInherited := false
	if o.Admin != "" {
		adminLn, adminInherited, err = master.AdminListener(o.Admin, func() (net.Listener, error) { return admin.Listen(o.Admin) })
		if err != nil {
			return fail(err)
		}
		undo = append(undo, func() { adminLn.Close() })
	}

	listeners, err := openListeners(o, master, byName, log)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { closeListeners(listeners, false) })
	r := &runner{o: o, log: log, logMu: logMu, stderr: stderr, master: master, listeners: listeners, notifier: systemd.NewNotifier(), configPath: o.Path, configTurn: make(chan struct{}, 1)}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r.ctx, r.stop = ctx, stop
	cfg, err := r.workerConfig(o, listeners)
	if err != nil {
		return fail(err)
	}
	cfg.FirstGeneration = master.FirstGeneration()
	cfg.FirstBanks = master.FirstBanks()
	cfg.TakeOver = master.Inherited()
	cfg.ReapOrphans = os.Getpid() == 1
	cfg.UpgradeMaster = r.upgradeMaster
	cfg.OnEvent = r.onEvent
	cfg.Logger = log
	sup, err := workers.New(cfg)
	if err != nil {
		return fail(err)
	}
	r.sup = sup
	defer func() {
		r.reloadMu.Lock()
		defer r.reloadMu.Unlock()
		closeListeners(r.listeners, r.handedOver())
	}()
	if adminLn != nil {
		shared := map[string]int{}
		for _, l := range listeners {
			if l.Group == nil {
				shared[l.Name] = l.shared.Fd()
			}
		}
		r.admin = admin.FromListener(adminLn, sup, log.Named("admin"), admin.Options{Inherited: adminInherited, SharedSockets: shared, Version: version, LogLinesDropped: sink.Dropped})
		admCtx, admStop := context.WithCancel(context.Background())
		admDone := make(chan struct{})
		go func() {
			defer close(admDone)
			if err := r.admin.Serve(admCtx); err != nil {
				log.Error("admin endpoint failed", "error", err)
			}
		}()
		// Runs before the listeners are closed (deferred above): the
		// endpoint reads the shared ones' queues, and serves until the
		// workers are gone.
		defer func() {
			admStop()
			<-admDone
		}()
	}
	for _, l := range listeners {
		log.Info("listening", "name", l.Name, "network", l.Network, "addr", l.Addr, "how", l.how, "balance", balanceOf(l))
	}

	// Workers may run as the master's user: none of their processes may
	// drive the master.
	ctl := control.NewServer(ctlLn, r.handle, log.Named("control"), control.Options{Refuse: func(pid int32) error {
		if sup.InWorkerTree(int(pid)) {
			return fmt.Errorf("process %d belongs to a worker", pid)
		}
		return nil
	}})
	ctlCtx, ctlStop := context.WithCancel(context.Background())
	ctlDone := make(chan struct{})
	go func() {
		defer close(ctlDone)
		ctl.Serve(ctlCtx)
	}()
	// stopControl stops accepting control connections; the ones in
	// progress (perhaps the one that asked for the upgrade) finish.
	r.stopControl = func() {
		ctlStop()
		ctlLn.Close()
	}
	defer func() {
		r.stopControl()
		<-ctlDone
	}()

	go r.watchdog(ctx)
	go r.handleSignals(sigc)
	log.Info("master started", "version", versionString(), "pid", os.Getpid(), "workers", o.Workers, "took_over", master.Inherited())
	err = sup.Run(ctx)
	if err != nil || !r.handedOver() {
		master.Stop()
		os.Remove(ctlPath)
		removePIDFile(o.PIDFile)
	}
	if err != nil {
		return runtimeError{err}
	}
	log.Info("master exiting")
	return nil
}

// removePIDFile removes the pid file on a clean stop, if it still names
// this process (after a hand-over the new master has rewritten it).
func removePIDFile(path string) {
	if path == "" {
		return
	}
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// runner ties the master's parts together: the supervisor, the
// listeners, tableflip, systemd and the control socket. The master's
// phase (starting, serving, upgrading, handed over, stopping) is the
// supervisor's; the runner reads it from events and status.
type runner struct {
	o           *runOptions
	log         hclog.Logger
	master      *upgrade.Master
	listeners   []listener
	notifier    *systemd.Notifier
	sup         *workers.Supervisor
	stop        context.CancelFunc
	stopControl func()
	admin       *admin.Server   // nil without --admin
	ctx         context.Context // cancelled once the master stops
	logMu       sync.Locker     // the logger's lock, taken by the workers' output too
	stderr      io.Writer
	// reloadMu guards o and listeners, which a configuration reload's
	// outcome replaces; configTurn (capacity 1) makes configuration
	// reloads one at a time (each reads the file and opens listeners):
	// taken before the file is read, given back by the reload's outcome.
	reloadMu   sync.Mutex
	configTurn chan struct{}
	// configMu guards configPending, the configuration reload waiting
	// for its turn, which new requests join.
	configMu      sync.Mutex
	configPending *pendingConfig
	configPath    string // --config, fixed for the master's life
}

func (r *runner) handedOver() bool {
	return r.sup.Status().Phase == workers.MasterHandedOver
}

// handleSignals maps signals to actions: SIGHUP reloads, SIGTTIN and
// SIGTTOU add and remove a worker (as Unicorn and einhorn do), SIGTERM
// and SIGINT stop gracefully, and a second SIGINT kills the workers at
// once.
func (r *runner) handleSignals(sigc <-chan os.Signal) {
	for sig := range sigc {
		at := time.Now()
		switch sig {
		case syscall.SIGHUP:
			r.log.Info("SIGHUP: reloading")
			go r.reload(context.Background(), false, at)
		case syscall.SIGTTIN, syscall.SIGTTOU:
			delta := map[os.Signal]int{syscall.SIGTTIN: 1, syscall.SIGTTOU: -1}[sig]
			r.log.Info("scaling by one worker", "signal", sig.String(), "by", delta)
			go func() {
				if res := <-r.sup.Scale(0, delta); res.Error != "" {
					r.log.Warn("cannot scale", "error", res.Error)
				}
			}()
		case syscall.SIGINT:
			if r.ctx.Err() != nil {
				r.log.Warn("second SIGINT: killing workers now")
				r.sup.Kill()
				continue
			}
			fallthrough
		default:
			r.log.Info("stopping", "signal", sig.String())
			r.stop()
		}
	}
}

// reload replaces the workers, or the whole master when its own binary
// changed on disk (or forceMaster is set), and returns the outcome. at is
// when it was asked for: the reload's timing starts there.
func (r *runner) reload(ctx context.Context, forceMaster bool, at time.Time) workers.ReloadResult {
	upgradeMaster := forceMaster
	if !upgradeMaster {
		changed, err := r.master.BinaryChanged()
		if err != nil {
			r.log.Warn("cannot tell whether handoff's binary changed; reloading workers only", "error", err)
		}
		upgradeMaster = changed
	}
	if !upgradeMaster && r.configPath != "" {
		return r.reloadWithConfig(ctx, at)
	}
	res := r.waitReload(ctx, workers.ReloadRequest{Master: upgradeMaster, At: at})
	if upgradeMaster && !forceMaster && !res.OK && ctx.Err() == nil && !strings.HasPrefix(res.Error, "master is no longer running") {
		// A broken handoff binary on disk must not turn every reload
		// into a failed master upgrade: the workers still reload.
		r.log.Warn("the new handoff binary did not take over; reloading the workers with this master", "error", res.Error)
		if r.configPath != "" {
			return r.reloadWithConfig(ctx, at)
		}
		return r.waitReload(ctx, workers.ReloadRequest{At: at})
	}
	return res
}

// waitReload asks the supervisor for a reload and waits for its result,
// or until ctx is done.
func (r *runner) waitReload(ctx context.Context, req workers.ReloadRequest) workers.ReloadResult {
	c := r.sup.Reload(req)
	select {
	case res := <-c:
		return res
	case <-ctx.Done():
		// A result delivered before the cancellation wins (the hand-over
		// to a new master cancels the requests in progress after
		// answering them).
		select {
		case res := <-c:
			return res
		default:
		}
		return workers.ReloadResult{Error: "gave up waiting: " + ctx.Err().Error()}
	}
}

// upgradeMaster hands the sockets to a new master process running the
// handoff binary now on disk, and returns once it serves. The supervisor
// runs it as a reload of its own (one at a time) and, on success,
// retires this master's workers; on failure this master serves on.
func (r *runner) upgradeMaster(ctx context.Context, h workers.Handover) error {
	r.reloadMu.Lock()
	uh, err := handover(r.listeners, h)
	r.reloadMu.Unlock()
	if err != nil {
		return err
	}
	return r.master.Upgrade(ctx, uh)
}

// onEvent keeps systemd informed. It runs on the supervisor's goroutine
// and must not call back into it.
func (r *runner) onEvent(e workers.Event) {
	if r.admin != nil {
		r.admin.Observe(e)
	}
	if e.Status.Phase == workers.MasterHandedOver {
		// The new master speaks to systemd now; this one retires
		// quietly (no STATUS=, no STOPPING=1), and stops taking
		// control requests: the new master owns the control socket.
		if e.Kind == workers.EventHandedOver {
			r.stopControl()
		}
		return
	}
	line := statusLine(e.Status)
	var err error
	switch e.Kind {
	case workers.EventServing:
		if r.master.Inherited() {
			err = r.notifier.ReadyAsMain(line)
		} else {
			err = r.notifier.Ready(line)
		}
		if rerr := r.master.Ready(); rerr != nil {
			r.log.Error("cannot finish start-up", "error", rerr)
		}
	case workers.EventReloading:
		err = r.notifier.Reloading(line)
	case workers.EventReloaded:
		err = r.notifier.Ready(line)
	case workers.EventStopping:
		err = r.notifier.Stopping(line, r.o.DrainTimeout+5*time.Second)
	case workers.EventChanged:
		if e.Status.Phase == workers.MasterServing {
			err = r.notifier.Status(line)
		}
	}
	if err != nil {
		r.log.Warn("cannot notify systemd", "error", err)
	}
}

// watchdog sends WATCHDOG=1 at half of WATCHDOG_USEC, but only while the
// supervision loop answers, so systemd restarts a wedged master.
func (r *runner) watchdog(ctx context.Context) {
	every, err := systemd.WatchdogInterval(r.master.Inherited())
	if err != nil {
		r.log.Warn("watchdog disabled", "error", err)
		return
	}
	if every <= 0 {
		return
	}
	r.log.Debug("watchdog enabled", "interval", every.String())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, every)
		err := r.sup.Alive(actx)
		cancel()
		if err != nil {
			r.log.Error("withholding watchdog ping", "error", err)
			continue
		}
		if r.handedOver() {
			// The new master pings systemd now.
			return
		}
		if err := r.notifier.Watchdog(); err != nil {
			r.log.Warn("cannot notify systemd", "error", err)
		}
	}
}

// statusLine is the one-line STATUS= for systemctl status: which
// generation serves, how many of its workers are ready, and how the last
// reload went.
func statusLine(st workers.Status) string {
	ready, want := 0, 0
	for _, w := range st.Workers {
		if w.Generation == st.Generation {
			want++
			if w.State == workers.Ready {
				ready++
			}
		}
	}
	state := "serving"
	if !st.Serving {
		state = "starting"
	}
	line := fmt.Sprintf("gen %d %s: %d/%d ready", st.Generation, state, ready, want)
	switch r := st.LastReload; {
	case st.Rollover != nil && st.Rollover.Master:
		line += "; upgrading master"
	case st.Reloading > 0:
		line += fmt.Sprintf("; reloading to gen %d", st.Reloading)
	case r != nil && r.OK:
		line += fmt.Sprintf("; last reload ok in %.2fs", r.Duration.Seconds())
	case r != nil && r.Master:
		line += "; " + r.Error
	case r != nil:
		line += fmt.Sprintf("; reload to gen %d failed: %s", r.Generation, r.Error)
	}
	return line
}

// handle answers control socket requests.
func (r *runner) handle(ctx context.Context, req control.Request) control.Response {
	resp := r.handleCmd(ctx, req)
	if r.admin != nil {
		r.admin.ControlRequest(req.Cmd, resp.OK)
	}
	return resp
}

func (r *runner) handleCmd(ctx context.Context, req control.Request) control.Response {
	at := time.Now()
	switch req.Cmd {
	case "status":
		st := r.sup.Status()
		st.Version = versionString()
		return result(true, "", st)
	case "reload":
		if !req.Wait {
			go r.reload(context.Background(), req.Master, at)
			return result(true, "", map[string]bool{"queued": true})
		}
		res := r.reload(ctx, req.Master, at)
		return result(res.OK, res.Error, res)
	case "scale":
		res := <-r.sup.Scale(req.Workers, 0)
		return result(res.Error == "", res.Error, res)
	case "stop":
		r.stop()
		return result(true, "", map[string]any{"stopping": true, "pid": os.Getpid()})
	}
	return control.Response{Error: fmt.Sprintf("unknown command %q", req.Cmd)}
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
