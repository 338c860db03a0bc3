package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// listener is one --listen: a kernel-steered group of sockets (a socket
// per worker slot and bank), or one socket every worker shares.
type listener struct {
	workers.Listener
	shared *upgrade.Listener // nil for a group
	how    string            // where the socket came from, for the log
}

// openListeners opens every --listen, in order. With --balance steer or
// sticky a TCP or UDP listener becomes a steered group where the kernel
// allows one; otherwise (unix sockets, a socket systemd passed without
// ReusePort=yes, a kernel that refuses) it is shared, and one log line
// says why. Sockets come from the previous master, else from systemd's
// fd store (a master restarted after a crash: restore), else from
// systemd socket activation, else they are bound now. On error, nothing
// opened is left open.
func openListeners(o *config.Options, m *upgrade.Master, activated map[string]int, restore *restoring, log hclog.Logger) ([]listener, error) {
	var out []listener
	fail := func(err error) ([]listener, error) {
		closeListeners(out, false)
		return nil, err
	}
	used := map[string]bool{}
	for _, lc := range o.Listen {
		spec := lc.Spec
		l, err := openListener(o, m, lc, activated, restore, log)
		if err != nil {
			return fail(err)
		}
		if _, ok := activated[spec.Name]; ok && l.how != howRestored {
			used[spec.Name] = true
		}
		out = append(out, l)
	}
	restore.drop()
	for name, fd := range activated {
		if !used[name] {
			unix.Close(fd)
		}
	}
	m.DropInherited()
	for _, l := range out {
		if l.Group != nil {
			go watchForeign(l.Group, foreignEvery, log)
		}
	}
	return out, nil
}

// foreignEvery is how often a steered listener's address is checked for
// sockets that are not its group's.
const foreignEvery = 5 * time.Second

// foreignGroup is the part of steer.Group watchForeign uses.
type foreignGroup interface {
	Foreign() (int, error)
	Spec() upgrade.Spec
	Addr() string
}

// watchForeign checks g's address every interval for sockets that are
// not the group's (another process that joined its SO_REUSEPORT group,
// or listens on an overlapping address) and logs when their number
// changes: such a socket takes connections no worker accepts, or its
// owner's program replaces the group's selector. It returns once the
// group is closed.
func watchForeign(g foreignGroup, interval time.Duration, log hclog.Logger) {
	last := 0
	var lastErr string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := g.Foreign()
		switch {
		case errors.Is(err, steer.ErrClosed), errors.Is(err, steer.ErrUnsupported):
			return
		case err != nil:
			if err.Error() != lastErr {
				log.Debug("cannot check the listener's address for foreign sockets", "name", g.Spec().Name, "error", err)
				lastErr = err.Error()
			}
		case n > 0 && n != last:
			log.Error("foreign sockets on a steered listener's address: another process listens there and takes connections no worker accepts; stop it", "name", g.Spec().Name, "addr", g.Addr(), "foreign", n)
		case n == 0 && last > 0:
			log.Info("no foreign socket on the listener's address any more", "name", g.Spec().Name, "addr", g.Addr())
		}
		if err == nil {
			last = n
		}
		<-t.C
	}
}

func openListener(o *config.Options, m *upgrade.Master, lc config.Listen, activated map[string]int, restore *restoring, log hclog.Logger) (listener, error) {
	spec := lc.Spec
	mode, wantSteer := steerMode(string(o.Balance))
	ip := spec.Network != "unix"
	if g, ok := m.InheritedGroup(spec.Name); ok {
		var st steer.State
		if err := json.Unmarshal(g.State, &st); err != nil {
			return listener{}, fmt.Errorf("listen %s: steered group from the previous master: %w", spec, err)
		}
		grp, err := steer.Import(st, g.Fds)
		if err != nil {
			return listener{}, fmt.Errorf("listen %s: steered group from the previous master: %w", spec, err)
		}
		if err := grp.Grow(o.Workers); err != nil {
			grp.Close()
			return listener{}, fmt.Errorf("listen %s: %w", spec, err)
		}
		if st.Mode != mode && wantSteer {
			log.Warn("listener keeps the balance of the previous master; restart to change it", "name", spec.Name, "balance", string(st.Mode))
		}
		return groupListener(spec, grp, "inherited from the previous master"), nil
	}
	if sl := restore.take(spec.Name); sl != nil {
		l, kept, err := restoreListener(o, lc, sl, m, log)
		if err == nil {
			// The store holds these sockets already; a selector
			// that was replaced is replaced there too (or removed).
			var replaced []string
			if !kept {
				replaced = sl.selectorNames()
			}
			restore.store.adopted(l, replaced)
			return l, nil
		}
		// The configuration changed while no master ran: what
		// systemd kept goes, and the listener is opened as usual.
		log.Warn("the sockets systemd kept for a listener do not fit it; opening it anew", "name", spec.Name, "error", err)
		restore.store.forget(sl.fdNames())
	}
	sayShared := func() {}
	if wantSteer && ip {
		opts := steer.Options{Slots: o.Workers, Mode: mode}
		switch o.SteerBPF {
		case "ebpf":
			opts.Mechanism = steer.EBPF
		case "cbpf":
			opts.Mechanism = steer.CBPF
		}
		var (
			grp *steer.Group
			err error
			how = "bound"
		)
		if fd, ok := activated[spec.Name]; ok {
			grp, err = steer.Join(spec, fd, opts)
			how = "from systemd socket activation"
		} else if len(activated) == 0 {
			grp, err = steer.New(spec, opts)
		} else {
			err = fmt.Errorf("socket activation passed no socket named %q", spec.Name)
		}
		if err == nil {
			if why := grp.Fallback(); why != nil {
				log.Info("steering with classic BPF", "name", spec.Name, "reason", why)
			}
			return groupListener(spec, grp, how), nil
		}
		if !errors.Is(err, steer.ErrUnsupported) && len(activated) == 0 {
			return listener{}, err
		}
		steerErr := err
		sayShared = func() {
			log.Warn("listener is shared by all workers, not steered", "name", spec.Name, "reason", steerErr)
		}
	} else if wantSteer {
		sayShared = func() { log.Info("listener is shared by all workers: unix sockets are not steered", "name", spec.Name) }
	}
	l, err := m.ListenerWith(spec, activated, unixOptions(lc))
	if err != nil {
		return listener{}, err
	}
	// Said once the shared socket exists: a startup error is one line.
	sayShared()
	how := "bound"
	if m.Inherited() {
		how = "inherited from the previous master"
	} else if _, ok := activated[spec.Name]; ok {
		how = "from systemd socket activation"
	}
	return listener{
		Listener: workers.Listener{Name: l.Name, Network: l.Network, Addr: l.Addr, Fd: l.Fd()},
		shared:   l,
		how:      how,
	}, nil
}

// spec is where the listener listens.
func (l listener) spec() upgrade.Spec {
	if l.Group != nil {
		return l.Group.Spec()
	}
	return l.shared.Spec
}

func groupListener(spec upgrade.Spec, g *steer.Group, how string) listener {
	return listener{
		Listener: workers.Listener{Name: spec.Name, Network: g.Spec().Network, Addr: g.Addr(), Fd: -1, Group: g},
		how:      how,
	}
}

// unixOptions is the mode and owner a unix socket this master binds is
// created with (a web server running as another user must be able to
// connect). upgrade.BindUnix gives them to the file before it appears
// at its path, never following a symlink.
func unixOptions(lc config.Listen) upgrade.UnixOptions {
	return upgrade.UnixOptions{Mode: lc.Mode, HasMode: lc.HasMode, UID: lc.UID, GID: lc.GID}
}

// steerMode maps --balance to a steering mode, and says whether it asks
// for steering at all.
func steerMode(balance string) (steer.Mode, bool) {
	switch balance {
	case "sticky":
		return steer.ModeSticky, true
	case "shared":
		return "", false
	}
	return steer.ModeSteer, true
}

// closeListeners closes the master's sockets. A unix socket's path is
// removed only on a real shutdown: after a hand-over the new master
// serves on it.
func closeListeners(ls []listener, handedOver bool) {
	for _, l := range ls {
		switch {
		case l.Group != nil:
			l.Group.Close()
		case handedOver:
			l.shared.Close()
		default:
			l.shared.Remove()
		}
	}
}

// handover describes the listeners for a new master.
func handover(ls []listener, h workers.Handover) (upgrade.Handover, error) {
	out := upgrade.Handover{Generation: h.LastGeneration, Banks: h.Banks}
	for _, l := range ls {
		if l.Group == nil {
			out.Listeners = append(out.Listeners, l.shared)
			continue
		}
		st, fds := l.Group.Export()
		b, err := json.Marshal(st)
		if err != nil {
			return out, fmt.Errorf("hand over %s: %w", l.Name, err)
		}
		out.Groups = append(out.Groups, upgrade.Group{Name: l.Name, State: b, Fds: fds})
	}
	return out, nil
}

// probeFor points a readiness probe at the first TCP listener.
func probeFor(p *workers.Probe, ls []listener) *workers.Probe {
	if p == nil {
		return nil
	}
	q := *p
	q.Listener = -1
	for i, l := range ls {
		if l.Network != "udp" && l.Network != "unix" {
			q.Listener = i
			break
		}
	}
	return &q
}

// workerListeners is what the supervisor passes to workers.
func workerListeners(ls []listener) []workers.Listener {
	out := make([]workers.Listener, len(ls))
	for i, l := range ls {
		out[i] = l.Listener
	}
	return out
}

// balanceOf names how the listener spreads connections, for the log.
func balanceOf(l listener) string {
	if l.Group == nil {
		return "shared"
	}
	return fmt.Sprintf("%s (%s, %s)", l.Group.Mode(), l.Group.Mechanism(), l.Group.Selection())
}
