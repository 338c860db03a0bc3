package master

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/workers"
)

// workerConfig is the supervisor's configuration for the options o and
// the listeners ls: what a generation runs with. The fields about the
// master itself (events, logger, hand-over) are the caller's.
func (r *runner) workerConfig(o *config.Options, ls []listener) (workers.Config, error) {
	c := workers.Config{
		Command:        o.Command,
		Workers:        o.Workers,
		Listeners:      workerListeners(ls),
		ReadyTimeout:   o.ReadyTimeout,
		DrainTimeout:   o.DrainTimeout,
		MinUptime:      minUptime(o),
		RetireParallel: o.RetireParallel,
		StopSignal:     o.StopSignal,
		Strategy:       o.Strategy,
		MaxMemory:      o.MaxMemory,
		Environ:        append(os.Environ(), o.Environment...),
	}
	c.HangTimeout, c.Watchdog = o.HangTimeout, o.Watchdog
	if os.Getenv("NOTIFY_SOCKET") == "" {
		c.StartAttempts = o.StartAttempts // under systemd, TimeoutStartSec= decides
	}
	if o.HangTimeout == 0 {
		c.HangTimeout = -1 // steered away from, never replaced
	}
	if o.Health.Mode != "" {
		if p := probeFor(&workers.Probe{HTTP: o.Health.Path}, ls); p != nil {
			c.Health = &workers.Health{Probe: *p, Interval: o.HealthInterval, Failures: o.HealthFailures}
		}
	}
	switch o.Ready.Mode {
	case config.ReadyDelay:
		c.ReadyDelay = o.Ready.Delay
	case config.ReadyTCP, config.ReadyHTTP:
		c.Probe = probeFor(&workers.Probe{HTTP: o.Ready.Path}, ls)
	}
	switch o.WorkerOutput {
	case config.OutputPrefix:
		c.Output = workers.OutputPrefix
	case config.OutputJSON:
		c.Output = workers.OutputJSON
	}
	if c.Output != workers.OutputInherit && c.Output != "" {
		c.OutputTo, c.OutputLock = r.stderr, r.logMu
	}
	if a := o.RunAs; a != nil {
		u := &workers.User{Name: a.User, UID: a.UID, GID: a.GID, Groups: a.Groups}
		if pw, err := user.LookupId(strconv.Itoa(int(a.UID))); err == nil {
			u.Name, u.Home = pw.Username, pw.HomeDir
		}
		c.User = u
	}
	return c, nil
}

// reloadWithConfig reloads from the configuration file read again: the
// listeners it names (new ones bound now, kept ones as they are), and
// the supervisor's configuration for the new generation. A file that
// does not load rejects the reload with its diagnostics, the running
// generation untouched.
//
// What the master keeps follows the reload's outcome, never the caller:
// the supervisor calls the request's Outcome on its goroutine when the
// reload ends, and that commits the new options and listeners (closing
// those no longer named) or closes the ones opened for it. A caller that
// stops waiting (a client's --timeout, systemd's TimeoutSec) changes
// nothing. Configuration reloads run one at a time (each reads the file
// against the listeners the previous one left): the turn is released by
// the outcome too.
//
// Requests that arrive while one waits for its turn join it (they asked
// before it reads the file): ten SIGHUPs in a burst make at most two
// reloads, as without --config.
func (r *runner) reloadWithConfig(ctx context.Context, at time.Time) workers.ReloadResult {
	r.configMu.Lock()
	p := r.configPending
	if p == nil {
		p = &pendingConfig{done: make(chan struct{}), at: at}
		r.configPending = p
		go r.runConfigReload(p)
	}
	r.configMu.Unlock()
	select {
	case <-p.done:
		return p.res
	case <-ctx.Done():
		select {
		case <-p.done:
			return p.res
		default:
		}
		return workers.ReloadResult{Error: "gave up waiting: " + ctx.Err().Error()}
	}
}

// pendingConfig is a configuration reload waiting for its turn, with
// every request that joined it.
type pendingConfig struct {
	at   time.Time // the earliest request's
	done chan struct{}
	res  workers.ReloadResult
}

// runConfigReload runs p once the previous configuration reload's outcome
// is in, whoever still waits for it.
func (r *runner) runConfigReload(p *pendingConfig) {
	r.configTurn <- struct{}{}
	r.configMu.Lock()
	r.configPending = nil // from here on, the file is read: later requests need a reload of their own
	r.configMu.Unlock()
	p.res = r.configReload(p.at)
	close(p.done)
}

// configReload reads the file and reloads with it, holding the turn,
// which the reload's outcome gives back.
func (r *runner) configReload(at time.Time) workers.ReloadResult {
	release := func() { <-r.configTurn }
	r.reloadMu.Lock()
	cur, curLs := r.o, r.listeners
	r.reloadMu.Unlock()
	next, warnings, err := config.Reload(cur)
	if err != nil {
		release()
		msg := "configuration " + cur.Path + ": " + strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
		r.log.Error("reload rejected: the configuration does not load; the running generation serves on", "error", msg)
		return workers.ReloadResult{Error: msg}
	}
	for _, w := range warnings {
		r.log.Warn(w)
	}
	ls, opened, err := r.relisten(curLs, next)
	if err != nil {
		release()
		r.log.Error("reload rejected: cannot open the listeners of the new configuration", "error", err)
		return workers.ReloadResult{Error: err.Error()}
	}
	cfg, err := r.workerConfig(next, ls)
	if err != nil {
		release()
		closeListeners(opened, false)
		return workers.ReloadResult{Error: err.Error()}
	}

	outcome := func(res workers.ReloadResult) {
		defer release()
		if !res.OK {
			closeListeners(opened, false)
			return
		}
		var gone []listener
		for _, l := range curLs {
			if !slices.ContainsFunc(ls, func(x listener) bool { return x.Group == l.Group && x.shared == l.shared }) {
				gone = append(gone, l)
			}
		}
		r.reloadMu.Lock()
		r.o, r.listeners = next, ls
		r.reloadMu.Unlock()
		// systemd's fd store follows, off this goroutine (the
		// supervisor's: each message may wait on systemd), and only
		// once this master is the unit's main process (a master
		// started by an upgrade syncs when it is named).
		if r.speaks() {
			r.fdstore.poke()
		}
		closeListeners(gone, false)
	}
	return r.waitReload(context.Background(), workers.ReloadRequest{At: at, Config: &cfg, KeepWorkers: next.Workers == cur.Workers, Outcome: outcome})
}

// relisten returns the listeners of next: those of the running
// configuration that next names the same way are kept; the others are
// opened now (and returned in opened too).
func (r *runner) relisten(cur []listener, next *config.Options) (ls, opened []listener, err error) {
	for _, lc := range next.Listen {
		i := slices.IndexFunc(cur, func(l listener) bool {
			return l.Name == lc.Name && l.spec().Network == lc.Network && l.spec().Address == lc.Address
		})
		if i >= 0 {
			// Its balance is its own: balance is a restart-only key
			// (config.Key.Restart), kept by config.Reload.
			l := cur[i]
			if l.Group != nil {
				if err := l.Group.Grow(next.Workers); err != nil {
					closeListeners(opened, false)
					return nil, nil, fmt.Errorf("listen %s: %w", lc.Spec, err)
				}
			}
			ls = append(ls, l)
			continue
		}
		one := *next
		one.Listen = []config.Listen{lc}
		got, err := openListeners(&one, r.master, nil, nil, r.log)
		if err != nil {
			closeListeners(opened, false)
			return nil, nil, err
		}
		opened = append(opened, got...)
		ls = append(ls, got...)
	}
	return ls, opened, nil
}
