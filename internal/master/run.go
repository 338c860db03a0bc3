package master

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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/admin"
	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/internal/logsink"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// Run runs the master with the settings o (parsed once, by package
// config) until it stops: on SIGTERM, SIGINT or a stop request, after a
// hand-over to a new master, or on a failure. Mistakes found before
// anything starts (command missing, address in use, a control socket
// another master serves) return an error and leave nothing behind.
// stderr receives the log and the workers' forwarded output; version is
// what status reports.
func Run(o *config.Options, stderr io.Writer, version string) error {
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
	log := newLogger(o, sink, logMu)
	for _, w := range o.Warnings {
		log.Warn(w)
	}

	// Catch signals before anything starts, so none is lost; never
	// ignore one (an ignored signal stays ignored in every worker).
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(sigc)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	r := &runner{
		o: o, log: log, logMu: logMu,
		stderr:     sink, // the workers' forwarded output goes through the sink too
		sink:       sink,
		version:    version,
		notifier:   systemd.NewNotifier(),
		configPath: o.Path,
		configTurn: make(chan struct{}, 1),
		past:       newPast(),
		announced:  make(chan struct{}),
		ctx:        ctx,
		stop:       stop,
	}
	if err := r.setUp(); err != nil {
		return err
	}
	defer func() {
		r.reloadMu.Lock()
		defer r.reloadMu.Unlock()
		closeListeners(r.listeners, r.handedOver())
	}()
	// Deferred after the listeners' close, so it runs before it: the
	// admin endpoint reads the shared listeners' queues, and serves
	// until the workers are gone.
	defer r.serveAdmin()()
	defer r.serveControl()()

	go r.watchdog(ctx)
	go r.handleSignals(sigc)
	go r.fdstore.run(ctx.Done(), func() []listener {
		r.reloadMu.Lock()
		defer r.reloadMu.Unlock()
		return r.listeners
	})
	log.Info("master started", "version", version, "pid", os.Getpid(), "workers", o.Workers, "took_over", r.master.Inherited())
	if why := r.master.Pinned(); why != "" {
		log.Warn(why)
	}
	err := r.sup.Run(ctx)
	if err != nil || !r.handedOver() {
		r.master.Stop()
		os.Remove(r.ctlPath)
		removePIDFile(o.PIDFile)
	}
	if err != nil {
		return err
	}
	log.Info("master exiting")
	return nil
}

// setUp takes the master's resources in order (the upgrade seam, the
// control socket, the admin address, the listeners) and makes the
// supervisor. On failure it undoes what it did, in reverse: one line of
// error, nothing left behind.
func (r *runner) setUp() error {
	o := r.o
	byName, restore, err := r.passedSockets()
	if err != nil {
		return err
	}
	master, err := upgrade.NewMaster(upgrade.Options{
		PIDFile:        o.PIDFile,
		UpgradeTimeout: o.ReadyTimeout + 30*time.Second,
	})
	if err != nil {
		return err
	}
	r.master = master
	r.past.inherit(master, r.log)
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
	r.ctlPath = control.Path(o.Control)
	r.ctlLn, err = master.ControlListener(r.ctlPath, func() (*net.UnixListener, error) { return control.ListenUnix(r.ctlPath) })
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() {
		r.ctlLn.Close()
		if !master.Inherited() {
			os.Remove(r.ctlPath)
		}
	})

	// The admin endpoint's address too (taken over from the previous
	// master, or bound): an address in use is a start-up error.
	if o.Admin != "" {
		r.adminLn, r.adminInherited, err = master.AdminListener(o.Admin, func() (net.Listener, error) { return admin.Listen(o.Admin) })
		if err != nil {
			return fail(err)
		}
		undo = append(undo, func() { r.adminLn.Close() })
	}

	r.listeners, err = openListeners(o, master, byName, restore, r.log)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { closeListeners(r.listeners, false) })
	// Before any worker runs: from here on a crash leaves the sockets
	// to systemd. (A master started by an upgrade holds the sockets its
	// predecessor stored; it syncs once named the main process, as
	// systemd takes FDSTORE=1 from the main process only.)
	if !master.Inherited() {
		r.fdstore.sync(r.listeners)
	}
	cfg, err := r.supervisorConfig()
	if err != nil {
		return fail(err)
	}
	r.sup, err = workers.New(cfg)
	if err != nil {
		return fail(err)
	}
	for _, l := range r.listeners {
		r.log.Info("listening", "name", l.Name, "network", l.Network, "addr", l.Addr, "how", l.how, "balance", balanceOf(l))
	}
	return nil
}

// passedSockets sorts the sockets systemd passed: a .socket unit's, by
// name, and what this master's predecessor kept in the fd store (after
// a crash), to restore from. Others are closed, and dropped from the
// store.
func (r *runner) passedSockets() (activated map[string]int, restore *restoring, err error) {
	passed, err := systemd.ActivationSockets()
	if err != nil {
		return nil, nil, err
	}
	stored, act, bad := systemd.SplitStored(passed)
	r.fdstore = newFdStore(r.log)
	restore = newRestoring(r.fdstore, stored)
	if len(bad) > 0 {
		var names []string
		for _, s := range bad {
			unix.Close(s.Fd)
			names = append(names, s.Name)
		}
		r.log.Warn("systemd passed sockets under names handoff does not make; closing them", "count", len(bad), "first", names[0])
		r.fdstore.forget(names)
	}
	activated = make(map[string]int, len(act))
	for _, s := range act {
		activated[s.Name] = s.Fd
	}
	return activated, restore, nil
}

// supervisorConfig is the supervisor's configuration for the running
// options and listeners, and for how this master started: taking over
// from a predecessor, or restoring after a crash.
func (r *runner) supervisorConfig() (workers.Config, error) {
	cfg, err := r.workerConfig(r.o, r.listeners)
	if err != nil {
		return cfg, err
	}
	master := r.master
	cfg.FirstGeneration = master.FirstGeneration()
	cfg.FirstBanks = master.FirstBanks()
	if banks := restoredBanks(r.listeners); banks != nil && !master.Inherited() {
		// Where the crashed master's selector left connections
		// waiting.
		cfg.FirstBanks = banks
	}
	cfg.TakeOver = master.Inherited()
	cfg.ReapOrphans = os.Getpid() == 1
	cfg.UpgradeMaster = r.upgradeMaster
	cfg.OnEvent = r.onEvent
	cfg.Logger = r.log
	return cfg, nil
}

// serveAdmin serves the admin endpoint, if there is one, and returns
// the function that stops it.
func (r *runner) serveAdmin() (stop func()) {
	if r.adminLn == nil {
		return func() {}
	}
	shared := map[string]int{}
	for _, l := range r.listeners {
		if l.Group == nil {
			shared[l.Name] = l.shared.Fd()
		}
	}
	r.admin = admin.FromListener(r.adminLn, r.sup, r.log.Named("admin"), admin.Options{Inherited: r.adminInherited, SharedSockets: shared, Version: r.version, LogLinesDropped: r.sink.Dropped, History: r.past.hist})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.admin.Serve(ctx); err != nil {
			r.log.Error("admin endpoint failed", "error", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// serveControl serves the control socket and returns the function that
// stops it and waits for the requests in progress. Workers may run as
// the master's user: none of their processes may drive the master.
func (r *runner) serveControl() (stop func()) {
	ctl := control.NewServer(r.ctlLn, r.handle, r.log.Named("control"), control.Options{Refuse: func(pid int32) error {
		if r.sup.InWorkerTree(int(pid)) {
			return fmt.Errorf("process %d belongs to a worker", pid)
		}
		return nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.Serve(ctx)
	}()
	// stopControl stops accepting control connections; the ones in
	// progress (perhaps the one that asked for the upgrade) finish.
	r.stopControl = func() {
		cancel()
		r.ctlLn.Close()
	}
	return func() {
		r.stopControl()
		<-done
	}
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
	o           *config.Options
	log         hclog.Logger
	master      *upgrade.Master
	listeners   []listener
	notifier    *systemd.Notifier
	fdstore     *fdStore // systemd's fd store, which keeps the listeners across a crash
	sup         *workers.Supervisor
	stop        context.CancelFunc
	stopControl func()
	admin       *admin.Server   // nil without --admin
	ctx         context.Context // cancelled once the master stops
	version     string          // handoff's, for status
	sink        *logsink.Writer // the master's stderr, which never stops it
	ctlPath     string
	ctlLn       *net.UnixListener
	adminLn     net.Listener // nil without --admin
	// adminInherited: adminLn came from the previous master.
	adminInherited bool
	logMu          sync.Locker // the logger's lock, taken by the workers' output too
	stderr         io.Writer
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
	past          *past  // the event history and the last reload
	// announced is closed once this master speaks to systemd as the
	// main process: at once in a master that took over from none, after
	// announce in one that did.
	announced chan struct{}
	// named is set once this master has named its successor the main
	// process (a master upgrade): it pings systemd no more.
	named atomic.Bool
}

// speaks reports whether this master may notify systemd: a new master
// only once the old one has named it the main process (before that,
// systemd would refuse it under NotifyAccess=main).
func (r *runner) speaks() bool {
	if !r.master.Inherited() {
		return true
	}
	select {
	case <-r.announced:
		return true
	default:
		return false
	}
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
	uh.State = r.past.handOver(r.log)
	uh.Successor = func(pid int) {
		// From here the new master pings systemd's watchdog; this
		// one's pings would be refused.
		r.named.Store(true)
		if pid == 0 {
			if os.Getenv("NOTIFY_SOCKET") != "" {
				r.log.Error("the new master is of an older version and sent no pid: it announces itself, which systemd takes only with NotifyAccess=all; under NotifyAccess=main systemd stops the unit when this master exits")
			}
			return
		}
		// With NotifyAccess=main, only this master (the unit's main
		// process) can make the new one the main process.
		if err := r.notifier.MainPID(pid); err != nil {
			r.log.Warn("cannot notify systemd", "error", err)
		}
	}
	return r.master.Upgrade(ctx, uh)
}

// onEvent records the event (the history, the admin endpoint) and keeps
// systemd informed. It runs on the supervisor's goroutine
// and must not call back into it.
func (r *runner) onEvent(e workers.Event) {
	r.past.observe(e)
	if r.admin != nil {
		r.admin.Observe(e)
	}
	if e.Status.Phase == workers.MasterHandedOver {
		// The new master speaks to systemd now; this one retires
		// quietly (no STATUS=, no STOPPING=1), and stops taking
		// control requests: the new master owns the control socket
		// (and systemd's fd store).
		if e.Kind == workers.EventHandedOver {
			r.fdstore.retire()
			r.stopControl()
		}
		return
	}
	if r.speaks() {
		// A group may have grown (scaling up, a reload to more
		// workers): its new sockets go to systemd's fd store.
		r.fdstore.poke()
	} else if e.Kind != workers.EventServing {
		return // announce syncs the fd store and sends the status of the moment
	}
	line := statusLine(e.Status)
	var err error
	switch e.Kind {
	case workers.EventServing:
		if r.master.Inherited() {
			// Ready first: the old master then names this one the
			// unit's main process, and only then may it speak to
			// systemd (NotifyAccess=main).
			if rerr := r.master.Ready(); rerr != nil {
				r.log.Error("cannot finish start-up", "error", rerr)
			}
			go r.announce()
			return
		}
		err = r.notifier.Ready(line)
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

// announceWait bounds how long a new master waits for the old one to name
// it the main process before it announces itself.
const announceWait = 30 * time.Second

// announce tells systemd, in a master started by an upgrade, that it is
// the main process and ready (MAINPID=, READY=1), once the old master has
// named it the main process (or could not: an older handoff, which
// leaves it to the new master and needs NotifyAccess=all).
func (r *runner) announce() {
	if err := r.master.AwaitMain(announceWait); err != nil {
		r.log.Warn("the old master did not name this one the main process; announcing itself (systemd takes that only with NotifyAccess=all)", "error", err)
	}
	if err := r.notifier.ReadyAsMain(statusLine(r.sup.Status())); err != nil {
		r.log.Warn("cannot notify systemd", "error", err)
	}
	close(r.announced)
	r.fdstore.poke()
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
	// now: ping at once, without waiting for the ticker.
	now := false
	if r.master.Inherited() {
		// Pings count once the old master has named this one the
		// main process; until then the old master pings. Its last
		// one may be nearly an interval old: the first comes at once.
		select {
		case <-ctx.Done():
			return
		case <-r.announced:
		}
		now = true
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if !now {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		now = false
		actx, cancel := context.WithTimeout(ctx, every)
		err := r.sup.Alive(actx)
		cancel()
		if err != nil {
			r.log.Error("withholding watchdog ping", "error", err)
			continue
		}
		if r.handedOver() || r.named.Load() {
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
		st.Version = r.version
		return result(true, "", r.past.status(st))
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
