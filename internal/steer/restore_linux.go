package steer

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/sockaddr"
	"github.com/handoff-dev/handoff/upgrade"
)

// Restore re-creates a group from descriptors that outlived the master
// that made them, which systemd kept in its fd store while that master
// crashed: socks are the group's members in index order (bank 0 and
// bank 1 of slot 0, then of slot 1, ...), all of them, and sel the
// descriptors of its eBPF selector in Export's order, or none. The
// group has len(socks)/2 slots (opts.Slots is ignored); opts.Mode and
// opts.Mechanism are as for New.
//
// The crashed master's selector is still attached to the group (systemd's
// copies keep it alive) and steers new connections into the backlogs of
// its last choice, where they wait. Restore keeps that choice, so that the
// caller starts its workers on those sockets (Active): with sel of this
// layout it adopts the same program and maps and reads the choice from the
// configuration map, without a moment unsteered; it resets the held counts
// (the crashed master's tracer missed the closes of its workers'
// connections). Without a usable selector it guesses the choice from the
// queues (in each slot the bank whose queue is longer, bank 0 if both
// are empty), steers to it with classic BPF at once (which replaces the old
// program), and then builds a new eBPF selector, waiting up to two seconds
// for the kernel to free the old one's socket array. Connections that land
// on the other bank of a slot (a crash in the middle of a rollover) wait
// for the next generation to use that bank.
//
// The sockets must be what spec names: an error says how they differ (the
// configuration changed while no master ran; the caller should drop them
// and bind anew). Restore owns socks and sel: on error it closes them.
func Restore(spec upgrade.Spec, opts Options, socks, sel []int) (*Group, error) {
	all := append(append([]int(nil), socks...), sel...)
	fail := func(err error) (*Group, error) {
		closeFds(all)
		return nil, fmt.Errorf("restore steered group %s: %w", spec, err)
	}
	if len(socks) == 0 || len(socks)%Banks != 0 || len(socks) > Banks*MaxSlots {
		return fail(fmt.Errorf("%d sockets: want %d per slot, at most %d slots", len(socks), Banks, MaxSlots))
	}
	opts.Slots = len(socks) / Banks
	g, err := newGroup(spec, opts)
	if err != nil {
		closeFds(all)
		return nil, err
	}
	if err := g.adoptFirst(socks[0]); err != nil {
		return fail(fmt.Errorf("socket 0: %w", err))
	}
	if err := g.matchSpec(); err != nil {
		return fail(err)
	}
	for i := 1; i < len(socks); i++ {
		if err := g.checkMember(socks[i]); err != nil {
			return fail(fmt.Errorf("socket %d: %w", i, err))
		}
	}
	g.fds = append([]int(nil), socks...)

	adopted, drop, reason := g.adoptSelector(sel, opts)
	if adopted {
		g.adopted = true
		return g, nil
	}
	active, err := g.queuedChoice()
	if err != nil {
		drop()
		g.closeAll()
		return nil, fmt.Errorf("restore steered group %s: %w", spec, err)
	}
	err = g.apply(active)
	// Only now, with this group's own program attached, may the dead
	// selector's socket array be emptied (a new selector needs its
	// sockets out of it): until then it steers the arrivals, where an
	// empty array would let the kernel hash over every member,
	// inactive banks included.
	drop()
	if err != nil {
		g.closeAll()
		return nil, fmt.Errorf("restore steered group %s: %w", spec, err)
	}
	if opts.Mechanism == CBPF {
		g.fallback = errors.New("classic BPF was asked for")
		return g, nil
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err = g.rebuildEBPF(active)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		if reason != nil {
			err = fmt.Errorf("%v; a new one: %w", reason, err)
		}
		if opts.Mechanism == EBPF {
			g.closeAll()
			return nil, fmt.Errorf("restore steered group %s: %w", spec, err)
		}
		g.fallback = err
	}
	return g, nil
}

// adoptSelector takes over the crashed master's eBPF selector, sel, if
// it has this layout, eBPF was not ruled out, and it steered somewhere:
// it then steers as before, with its probes cleared and its counts
// reset. Otherwise it says why in reason (nil when there was no
// selector), and drop empties and closes what it was given: the caller
// calls it once its own program steers.
func (g *Group) adoptSelector(sel []int, opts Options) (adopted bool, drop func(), reason error) {
	drop = func() {}
	switch {
	case len(sel) == ebpfFds && opts.Mechanism != CBPF:
		e, err := adoptEBPF(sel, layoutVersion, g.tcpPort())
		var active []Target
		if err == nil {
			active, err = g.choiceOf(e)
		}
		if err == nil && len(active) > 0 {
			g.ebpf = e
			if err = e.clearProbes(); err == nil {
				err = e.resetCounts()
			}
			if err == nil {
				err = g.apply(active)
			}
			if err == nil {
				err = e.attach(g.fds[0])
			}
			if err == nil {
				return true, drop, nil
			}
			g.ebpf = nil
		}
		if err == nil {
			err = errors.New("it steered nowhere")
		}
		reason = fmt.Errorf("the crashed master's eBPF selector: %w", err)
		// Its sockets leave its array, which a new one needs.
		drop = func() {
			e.forget()
			e.close()
		}
	case len(sel) >= ebpfFdsV1:
		// Not this layout, or not asked for: still empty its socket
		// array (systemd may hold a copy of it), which a new one needs.
		e, _ := adoptEBPF(sel, 0, 0)
		drop = func() {
			e.forget()
			e.close()
		}
		reason = fmt.Errorf("%d selector descriptors, want %d", len(sel), ebpfFds)
	case len(sel) > 0:
		closeFds(sel)
		reason = fmt.Errorf("%d selector descriptors, want %d", len(sel), ebpfFds)
	}
	return false, drop, reason
}

// choiceOf reads an adopted selector's choice as targets of this group.
func (g *Group) choiceOf(e *ebpfSel) ([]Target, error) {
	keys, err := e.choice()
	if err != nil {
		return nil, err
	}
	active := make([]Target, 0, len(keys))
	for _, k := range keys {
		t := Target{Slot: int(k) / Banks, Bank: int(k) % Banks}
		if t.Slot >= g.slots {
			return nil, fmt.Errorf("it steers to socket %d of %d", k, len(g.fds))
		}
		active = append(active, t)
	}
	return normalize(active, g.slots)
}

// queuedChoice is, in each slot, the bank whose socket has more waiting
// (bank 0 if neither has any).
func (g *Group) queuedChoice() ([]Target, error) {
	active := make([]Target, g.slots)
	for s := range active {
		active[s] = Target{Slot: s}
		q0, err := g.QueueLen(0, s)
		if err != nil {
			return nil, err
		}
		q1, err := g.QueueLen(1, s)
		if err != nil {
			return nil, err
		}
		if q1 > q0 {
			active[s].Bank = 1
		}
	}
	return active, nil
}

// matchSpec checks the adopted first socket against the address of the
// group's spec (any port for port 0); adoptFirst checked TCP or UDP.
func (g *Group) matchSpec() error {
	if g.spec.Network == "" || g.spec.Address == "" {
		return nil
	}
	a, err := sockaddr.Resolve(g.spec.Network, g.spec.Address)
	if err != nil {
		return err
	}
	cands := []sockaddr.Addr{a}
	if a.DualStack {
		cands = append(cands, a.IPv4())
	}
	for _, c := range cands {
		if sameAddr(c.Sockaddr, g.sa) {
			return nil
		}
	}
	return fmt.Errorf("the socket is on %s, where %s was expected", g.addr, g.spec)
}

// sameAddr compares two IP socket addresses; port 0 in want matches any.
func sameAddr(want, got unix.Sockaddr) bool {
	switch w := want.(type) {
	case *unix.SockaddrInet4:
		g, ok := got.(*unix.SockaddrInet4)
		return ok && w.Addr == g.Addr && (w.Port == 0 || w.Port == g.Port)
	case *unix.SockaddrInet6:
		g, ok := got.(*unix.SockaddrInet6)
		return ok && w.Addr == g.Addr && (w.Port == 0 || w.Port == g.Port)
	}
	return false
}

// Active returns the sockets new connections are steered to, by slot.
func (g *Group) Active() []Target {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Target(nil), g.active...)
}

// AdoptedSelector reports whether Restore took over the crashed master's
// eBPF selector (its descriptors are the group's now) rather than
// attaching a new one.
func (g *Group) AdoptedSelector() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.adopted
}
