//go:build linux

package steer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/sockaddr"
	"github.com/handoff-dev/handoff/upgrade"
)

// Group is one listener's SO_REUSEPORT group: Banks sockets per slot,
// all bound to one address, and the BPF selector attached to the group.
// Its descriptors are blocking, close-on-exec and never registered with
// the Go poller; the master never accepts on them. Methods are safe for
// concurrent use.
type Group struct {
	mu       sync.Mutex
	spec     upgrade.Spec
	addr     string
	sotype   int
	family   int
	v6only   int
	sa       unix.Sockaddr // the bound address, port included: where members bind
	fds      []int         // index(Target) → descriptor
	slots    int
	mode     Mode
	active   []Target
	ebpf     *ebpfSel // nil: classic BPF
	fallback error    // why eBPF is not used
	closed   bool
	adopted  bool // Restore took over the crashed master's selector

	cbase  []unix.SockFilter // classic BPF: the program of the choice, without probes
	probes map[uint16]int    // Dials in flight: TCP source port → socket index
	route  *probeRoute       // where Dials connect from and to; nil until the first
}

// New binds a group for spec (network tcp, tcp4, tcp6 or udp) with
// opts.Slots slots and attaches a selector: eBPF if the process may load
// it (unless opts say otherwise), else classic BPF. Port 0 picks a free
// port for the whole group. The group starts steered to bank 0 of every
// slot. An error wrapping ErrUnsupported means the caller should fall
// back to one shared socket; other errors (a bad or busy address) would
// fail a shared socket too. An address where another socket listens
// (TCP) or is bound (UDP), on the same address or one that overlaps it,
// yields an error wrapping upgrade.ErrAddressInUse that names it and,
// where /proc shows it, the process: New never joins a group it did not
// create.
func New(spec upgrade.Spec, opts Options) (*Group, error) {
	g, err := newGroup(spec, opts)
	if err != nil {
		return nil, err
	}
	first, err := g.resolve()
	if errors.Is(err, upgrade.ErrAddressInUse) {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	if err != nil {
		return nil, fmt.Errorf("steer %s: %w", spec, err)
	}
	if err := g.build(first, opts.Mechanism, false); err != nil {
		return nil, fmt.Errorf("steer %s: %w", spec, err)
	}
	g.mu.Lock()
	err = g.checkAlone()
	g.mu.Unlock()
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	return g, nil
}

// Join builds a group around fd, a socket passed by socket activation
// (systemd's ReusePort=yes): fd becomes bank 0 of slot 0 and new sockets
// join its group. On success the group owns fd; on error the caller
// still does. A socket without SO_REUSEPORT yields an error wrapping
// ErrUnsupported: use it as a shared socket instead. fd should be alone
// in its group: classic BPF counts on the group's join order.
func Join(spec upgrade.Spec, fd int, opts Options) (*Group, error) {
	g, err := newGroup(spec, opts)
	if err != nil {
		return nil, err
	}
	if err := g.adoptFirst(fd); err != nil {
		return nil, fmt.Errorf("steer %s: fd %d: %w", spec.Name, fd, err)
	}
	if g.spec.Network == "" {
		g.spec.Network = networkOf(g.sotype, g.family, g.v6only)
	}
	if g.spec.Address == "" {
		g.spec.Address = g.addr
	}
	if err := g.build(fd, opts.Mechanism, true); err != nil {
		return nil, fmt.Errorf("steer %s: %w", g.spec, err)
	}
	return g, nil
}

func newGroup(spec upgrade.Spec, opts Options) (*Group, error) {
	if spec.Network == "unix" {
		return nil, fmt.Errorf("steer %s: unix sockets have no SO_REUSEPORT groups: %w", spec, ErrUnsupported)
	}
	if opts.Slots < 1 || opts.Slots > MaxSlots {
		return nil, fmt.Errorf("steer %s: %d slots (want 1 to %d)", spec, opts.Slots, MaxSlots)
	}
	mode, err := ParseMode(string(opts.Mode))
	if err != nil {
		return nil, fmt.Errorf("steer %s: %w", spec, err)
	}
	switch opts.Mechanism {
	case Auto, EBPF, CBPF:
	default:
		return nil, fmt.Errorf("steer %s: unknown mechanism %q (want ebpf or cbpf)", spec, opts.Mechanism)
	}
	return &Group{spec: spec, slots: opts.Slots, mode: mode}, nil
}

// build takes the group's first socket (bound, and listening for TCP),
// attaches the selector to it while it is alone, steering everything to
// it, then adds the other members and steers to bank 0. Connections that
// arrive meanwhile land on the first socket, which is active. On error
// it closes every socket, first included.
func (g *Group) build(first int, mech Mechanism, keepFirst bool) (err error) {
	g.fds = []int{first}
	defer func() {
		if err == nil {
			return
		}
		if !keepFirst {
			g.closeAll()
			return
		}
		// Leave the caller's socket as it came: alone, no program.
		g.fds = g.fds[1:]
		g.closeAll()
		_ = unix.SetsockoptInt(first, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}()
	sa, err := unix.Getsockname(first)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	g.sa = sa
	g.addr = sockaddrString(sa)
	if mech != CBPF {
		err := g.useEBPF(loadEBPF(g.tcpPort()))
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("eBPF not permitted (needs root, or CAP_BPF and CAP_NET_ADMIN): %w", err)
		}
		if err != nil && mech == EBPF {
			return err
		}
		g.fallback = err
	} else {
		g.fallback = errors.New("classic BPF was asked for")
	}
	if g.ebpf == nil {
		if err := attachClassic(first, []unix.SockFilter{stmt(retK, 0)}); err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnsupported)
		}
	}
	for i := 1; i < Banks*g.slots; i++ {
		if err := g.addMember(); err != nil {
			return err
		}
	}
	initial := make([]Target, g.slots)
	for s := range initial {
		initial[s] = Target{Slot: s}
	}
	return g.apply(initial)
}

// useEBPF adopts a freshly loaded selector: the first socket goes into
// its array, everything is steered to it, and it is attached.
func (g *Group) useEBPF(e *ebpfSel, err error) error {
	if err != nil {
		return err
	}
	first := g.fds[0]
	err = e.add(0, first)
	if errors.Is(err, unix.EBUSY) {
		// A socket is in at most one socket array: this one is still
		// in the array of a selector a previous instance attached
		// (after a restart, systemd kept the socket and so the
		// group). Attaching ours releases that program; the kernel
		// then frees its array, asynchronously.
		if err = e.attach(first); err == nil {
			err = addWhenFree(e, first)
		}
	}
	if err == nil {
		if err = e.set(confRoundRobin, []uint32{0}, nil); err == nil {
			err = e.attach(first)
		}
	}
	if err != nil {
		e.close()
		return err
	}
	g.ebpf = e
	return nil
}

// addWhenFree retries putting the first socket in the socket array for a
// while, until the array of a replaced selector has been freed.
func addWhenFree(e *ebpfSel, fd int) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := e.add(0, fd)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%w (the socket is still in another selector's socket array)", err)
			}
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// addMember creates the next socket of the group and puts it in the
// socket array.
func (g *Group) addMember() error {
	fd, err := newSocket(g.family, g.sotype, g.v6only, g.sa)
	if err != nil {
		return err
	}
	g.fds = append(g.fds, fd)
	if g.ebpf != nil {
		return g.ebpf.add(len(g.fds)-1, fd)
	}
	return nil
}

// Steer sets which sockets receive new connections (for UDP, new
// datagrams): at most one bank per slot. It replaces the whole choice at
// once: one map update with eBPF, one program swap with classic BPF.
// An empty set keeps the previous choice: with no worker ready,
// connections go on queueing on the sockets last chosen, for their
// replacements to accept; none is refused.
func (g *Group) Steer(active []Target) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("steer %s: group closed", g.spec)
	}
	if len(active) == 0 {
		return nil
	}
	sorted, err := normalize(active, g.slots)
	if err != nil {
		return fmt.Errorf("steer %s: %w", g.spec, err)
	}
	if err := g.apply(sorted); err != nil {
		return fmt.Errorf("steer %s: %w", g.spec, err)
	}
	return nil
}

// apply installs a normalized, non-empty choice.
func (g *Group) apply(active []Target) error {
	if g.ebpf != nil {
		keys := make([]uint32, len(active))
		for i, t := range active {
			keys[i] = uint32(index(t))
		}
		var slotKeys []uint32
		mode := uint32(confRoundRobin)
		switch {
		case g.mode == ModeSticky:
			mode = confSticky
			slotKeys = make([]uint32, g.slots)
			for i := range slotKeys {
				slotKeys[i] = noKey
			}
			for _, t := range active {
				slotKeys[t.Slot] = uint32(index(t))
			}
		case g.sotype == unix.SOCK_DGRAM:
			mode = confFlowHash
		case g.ebpf.tracer != nil:
			mode = confLeastHeld
		}
		if err := g.ebpf.set(mode, keys, slotKeys); err != nil {
			return err
		}
	} else {
		p, err := classic(g.mode, g.slots, active, maxIns-probeReserve)
		if err != nil {
			return err
		}
		if err := attachClassic(g.fds[0], g.withProbes(p)); err != nil {
			return err
		}
		g.cbase = p
	}
	g.active = active
	return nil
}

// Grow makes sure the group has at least slots slots: new sockets join
// at the end of the group, so existing indices stay. New slots receive
// nothing until Steer names them, and sticky mode keeps hashing over
// the slot count of the last Steer until the next one. There is no
// shrinking: scale down by steering away from slots.
func (g *Group) Grow(slots int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("steer %s: group closed", g.spec)
	}
	if slots > MaxSlots {
		return fmt.Errorf("steer %s: %d slots (the limit is %d)", g.spec, slots, MaxSlots)
	}
	had := len(g.fds)
	for len(g.fds) < Banks*slots {
		if err := g.addMember(); err != nil {
			// Closing the newest members, last first, leaves the
			// indices of the others as they were.
			for i := len(g.fds) - 1; i >= had; i-- {
				unix.Close(g.fds[i])
			}
			g.fds = g.fds[:had]
			return fmt.Errorf("steer %s: grow to %d slots: %w", g.spec, slots, err)
		}
	}
	g.slots = max(g.slots, slots)
	return nil
}

// Fd returns the descriptor of a slot's socket in a bank, for a worker's
// LISTEN_FDS, or -1 if there is none. It stays the group's: pass it to a
// child process, do not close it.
func (g *Group) Fd(bank, slot int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fd(bank, slot)
}

func (g *Group) fd(bank, slot int) int {
	if g.closed || bank < 0 || bank >= Banks || slot < 0 || slot >= g.slots {
		return -1
	}
	return g.fds[index(Target{Slot: slot, Bank: bank})]
}

// Addr returns the bound address, with the port the kernel picked for
// port 0.
func (g *Group) Addr() string { return g.addr }

// Spec returns the listener spec of the group.
func (g *Group) Spec() upgrade.Spec { return g.spec }

// Slots returns the number of slots.
func (g *Group) Slots() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.slots
}

// Mode returns the selection policy.
func (g *Group) Mode() Mode { return g.mode }

// Mechanism returns EBPF or CBPF.
func (g *Group) Mechanism() Mechanism {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mechanism()
}

func (g *Group) mechanism() Mechanism {
	if g.ebpf != nil {
		return EBPF
	}
	return CBPF
}

// Selection describes how a socket is picked, for status output:
// "round-robin", "flow-hash" or "client-address".
func (g *Group) Selection() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.selection()
}

func (g *Group) selection() string {
	switch {
	case g.mode == ModeSticky:
		return "client-address"
	case g.ebpf != nil && g.sotype == unix.SOCK_STREAM && g.ebpf.tracer != nil:
		return "least-held"
	case g.ebpf != nil && g.sotype == unix.SOCK_STREAM:
		return "round-robin"
	}
	return "flow-hash"
}

// tcpPort is the group's port, host order, for the tracer that counts
// held connections; 0 for UDP, which has none to count.
func (g *Group) tcpPort() uint16 {
	if g.sotype != unix.SOCK_STREAM {
		return 0
	}
	switch a := g.sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(a.Port)
	case *unix.SockaddrInet6:
		return uint16(a.Port)
	}
	return 0
}

// LoadAware returns nil if the kernel counts the connections each socket
// holds (Held) and, in ModeSteer over TCP, gives each new connection to
// an active socket holding the fewest (ties round-robin); otherwise why
// not, one line for the log: classic BPF (it cannot read maps), UDP
// (datagrams are not held), or a tracepoint program that could not be
// loaded (then eBPF selection is plain round-robin, and the master can
// only steer away from slots whose QueueLen grows).
func (g *Group) LoadAware() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.ebpf == nil:
		return errors.New("classic BPF cannot count held connections")
	case g.sotype != unix.SOCK_STREAM:
		return errors.New("UDP: no connections to count")
	case g.ebpf.tracer == nil:
		if g.ebpf.noLoad != nil {
			return g.ebpf.noLoad
		}
		return errors.New("held connections not counted")
	}
	return nil
}

// Held returns the connections the kernel steered to the socket of bank
// and slot that are established and that the server's side has not
// closed: waiting in its accept queue, or accepted by the worker and
// still open (a client that closed first leaves it held until the worker
// closes it; a reset ends it).
// Handshakes in progress are not counted. Only TCP groups with eBPF and
// the tracepoint program count (LoadAware is nil); otherwise Held is an
// error. Counts survive a hand-over to a master of this layout.
func (g *Group) Held(bank, slot int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd(bank, slot) < 0 {
		return 0, fmt.Errorf("steer %s: no socket in bank %d slot %d", g.spec, bank, slot)
	}
	if g.ebpf == nil || g.ebpf.tracer == nil || g.sotype != unix.SOCK_STREAM {
		return 0, fmt.Errorf("steer %s: held connections are not counted", g.spec)
	}
	held, err := g.ebpf.heldCounts()
	if err != nil {
		return 0, fmt.Errorf("steer %s: %w", g.spec, err)
	}
	return int(max(held[index(Target{Slot: slot, Bank: bank})], 0)), nil
}

// Fallback returns why the group does not use eBPF, or nil if it does:
// one line for the log.
func (g *Group) Fallback() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ebpf != nil {
		return nil
	}
	return g.fallback
}

// QueueLen returns how much waits on a socket: for TCP, the connections
// in its accept queue (TCP_INFO tcpi_unacked of a listener); for UDP, the
// bytes of receive memory its queued datagrams take (SO_MEMINFO
// rmem_alloc: zero exactly when nothing waits, but counted in buffer
// sizes, not payload). A TCP socket that is no longer listening (a
// worker called shutdown on it, which also takes it out of the group) is
// an error.
func (g *Group) QueueLen(bank, slot int) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fd := g.fd(bank, slot)
	if fd < 0 {
		return 0, fmt.Errorf("steer %s: no socket in bank %d slot %d", g.spec, bank, slot)
	}
	if g.sotype == unix.SOCK_DGRAM {
		var mem [unix.SK_MEMINFO_VARS]uint32
		l := uint32(unsafe.Sizeof(mem))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return 0, fmt.Errorf("steer %s: getsockopt SO_MEMINFO: %w", g.spec, e)
		}
		return int(mem[unix.SK_MEMINFO_RMEM_ALLOC]), nil
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("steer %s: getsockopt TCP_INFO: %w", g.spec, err)
	}
	if info.State != tcpListen {
		return 0, fmt.Errorf("steer %s: bank %d slot %d is no longer listening (shut down by a worker?)", g.spec, bank, slot)
	}
	return int(info.Unacked), nil
}

const tcpListen = 10 // TCP_LISTEN in include/net/tcp_states.h

// WaitDrained waits until the socket of bank and slot has had an empty
// queue (QueueLen 0) for quiet, counting from since (when the socket was
// steered away; zero means now) or from the last time its queue was seen
// non-empty, whichever is later: call it after steering away from the
// socket and before stopping its worker. The quiet period covers
// handshakes that were in flight at the switch (they complete onto the
// socket chosen at SYN time), and gives the worker time to read the
// request of the last connection it accepted. A socket steered away long
// enough ago, with nothing queued, returns at once. It returns early
// with ctx's error.
func (g *Group) WaitDrained(ctx context.Context, bank, slot int, since time.Time, quiet time.Duration) error {
	tick := min(max(quiet/4, time.Millisecond), 20*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	if since.IsZero() {
		since = time.Now()
	}
	for {
		n, err := g.QueueLen(bank, slot)
		if err != nil {
			return err
		}
		now := time.Now()
		if n > 0 {
			since = now
		} else if now.Sub(since) >= quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("steer %s: bank %d slot %d still has %d queued: %w", g.spec, bank, slot, n, ctx.Err())
		case <-t.C:
		}
	}
}

// Export returns what a new master needs to take the group over: the
// state, and the descriptors (every socket in index order, then for eBPF
// the program, socket array, configuration, counter, probe, held, pending
// and conns map; not the tracepoint program, see doc.go). They
// stay the group's: send them (SCM_RIGHTS copies them), then Close the
// group as usual; the group and its program live on while any socket is
// open. Do not Dial after Export: the new master drops probe entries.
func (g *Group) Export() (State, []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := State{
		Spec: g.spec, Addr: g.addr, Slots: g.slots, Mode: g.mode,
		Mechanism: CBPF, Active: append([]Target(nil), g.active...),
	}
	fds := append([]int(nil), g.fds...)
	if g.ebpf != nil {
		st.Mechanism = EBPF
		st.Layout = layoutVersion
		fds = append(fds, g.ebpf.fds()...)
	}
	if g.closed {
		fds = nil
	}
	return st, fds
}

// Import re-creates a group from a State and the descriptors Export
// listed, received from the previous master, and re-applies the choice.
// It keeps the eBPF program and maps when they have this layout,
// rebuilds them otherwise, and falls back to classic BPF when eBPF
// cannot be used any more. Import owns fds from then on: on error it
// closes them (the previous master still holds its own copies).
func Import(st State, fds []int) (*Group, error) {
	fail := func(err error) (*Group, error) {
		closeFds(fds)
		return nil, fmt.Errorf("take over steered group %s: %w", st.Spec, err)
	}
	g, err := newGroup(st.Spec, Options{Slots: st.Slots, Mode: st.Mode})
	if err != nil {
		closeFds(fds)
		return nil, err
	}
	nsock := Banks * st.Slots
	want := nsock
	if st.Mechanism == EBPF {
		switch {
		case st.Layout == layoutVersion:
			want += ebpfFds
		case st.Layout == 2:
			want += ebpfFdsV2
		case st.Layout <= 1:
			want += ebpfFdsV1
		default:
			// A later layout: at least the four every layout starts
			// with; the rest are closed.
			want = max(len(fds), nsock+ebpfFdsV1)
		}
	}
	if len(fds) != want {
		return fail(fmt.Errorf("got %d descriptors, want %d", len(fds), want))
	}
	if err := g.adoptFirst(fds[0]); err != nil {
		return fail(fmt.Errorf("socket 0: %w", err))
	}
	for i := 1; i < nsock; i++ {
		if err := g.checkMember(fds[i]); err != nil {
			return fail(fmt.Errorf("socket %d: %w", i, err))
		}
	}
	g.fds = append([]int(nil), fds[:nsock]...)
	active, err := normalize(st.Active, g.slots)
	if err != nil || len(active) == 0 {
		active = make([]Target, g.slots)
		for s := range active {
			active[s] = Target{Slot: s}
		}
	}
	if st.Mechanism != EBPF {
		g.fallback = errors.New("classic BPF was handed over")
		if err := g.apply(active); err != nil {
			g.closeAll()
			return nil, fmt.Errorf("take over steered group %s: %w", st.Spec, err)
		}
		return g, nil
	}
	e, err := adoptEBPF(fds[nsock:], st.Layout, g.tcpPort())
	if err == nil {
		g.ebpf = e
		// Probes of the previous master are over: it must not Dial
		// after Export. An entry it left (it stopped in the middle
		// of a Dial) would send that source port to its target.
		if err = e.clearProbes(); err == nil {
			err = g.apply(active)
		}
		if err == nil {
			err = e.attach(g.fds[0])
		}
		if err == nil {
			return g, nil
		}
		g.ebpf = nil
	}
	// Steer with classic BPF at once (attaching replaces the old program
	// atomically), then try a fresh eBPF selector; the sockets leave
	// the old array first, since a socket is in at most one.
	reason := fmt.Errorf("handed-over eBPF selector: %w", err)
	if err := g.apply(active); err != nil {
		e.forget()
		e.close()
		g.closeAll()
		return nil, fmt.Errorf("take over steered group %s: %w", st.Spec, err)
	}
	e.forget()
	e.close()
	if err := g.rebuildEBPF(active); err != nil {
		g.fallback = fmt.Errorf("%v; a new one: %w", reason, err)
	}
	return g, nil
}

// rebuildEBPF loads a new eBPF selector for an existing group (all
// sockets already members) and attaches it; on failure the group stays
// on classic BPF.
func (g *Group) rebuildEBPF(active []Target) error {
	e, err := loadEBPF(g.tcpPort())
	if err != nil {
		return err
	}
	for i, fd := range g.fds {
		if err := e.add(i, fd); err != nil {
			e.close()
			return err
		}
	}
	g.ebpf = e
	if err = g.apply(active); err == nil {
		err = e.attach(g.fds[0])
	}
	if err != nil {
		g.ebpf = nil
		e.forget()
		e.close()
		return err
	}
	return nil
}

// Close closes every socket and the selector: the master's final
// shutdown. Sockets still open in workers keep the group (and its
// program) alive until they exit.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closeAll()
	return nil
}

func (g *Group) closeAll() {
	g.closed = true
	// Last first: while some remain, the others keep their indices.
	for i := len(g.fds) - 1; i >= 0; i-- {
		unix.Close(g.fds[i])
	}
	g.fds = nil
	if g.ebpf != nil {
		g.ebpf.close()
		g.ebpf = nil
	}
}

// String describes the group for logs and status, e.g. "http on
// 127.0.0.1:8080: 4 slots, ebpf round-robin".
func (g *Group) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fmt.Sprintf("%s on %s: %d slots, %s %s", g.spec.Name, g.addr, g.slots, g.mechanism(), g.selection())
}

// resolve works out family, socket type and address from the spec, and
// binds the first socket.
func (g *Group) resolve() (int, error) {
	a, err := sockaddr.Resolve(g.spec.Network, g.spec.Address)
	if err != nil {
		return -1, err
	}
	// Refuse an address another socket holds: our members set
	// SO_REUSEPORT, so the kernel would let them join (or overlap) a
	// group of another process of the same user, which would then take
	// a share of the connections that no worker of ours accepts.
	err = upgrade.CheckFree(a.Type, a.V6Only, a.Sockaddr)
	if errors.Is(err, unix.EAFNOSUPPORT) && a.DualStack {
		err = upgrade.CheckFree(a.Type, 0, a.IPv4().Sockaddr)
	}
	if err != nil {
		return -1, err
	}
	fd, err := newSocket(a.Family, a.Type, a.V6Only, a.Sockaddr)
	if err != nil && errors.Is(err, unix.EAFNOSUPPORT) && a.DualStack {
		// A wildcard on a host without IPv6.
		a = a.IPv4()
		fd, err = newSocket(a.Family, a.Type, a.V6Only, a.Sockaddr)
	}
	g.family, g.sotype, g.v6only, g.sa = a.Family, a.Type, a.V6Only, a.Sockaddr
	return fd, err
}

// adoptFirst checks a socket passed in (activation, hand-over) and takes
// family, type and address from it.
func (g *Group) adoptFirst(fd int) error {
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	switch sa.(type) {
	case *unix.SockaddrInet4:
		g.family = unix.AF_INET
	case *unix.SockaddrInet6:
		g.family = unix.AF_INET6
		if g.v6only, err = unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil {
			return fmt.Errorf("getsockopt IPV6_V6ONLY: %w", err)
		}
	default:
		return fmt.Errorf("not an IP socket: %w", ErrUnsupported)
	}
	if sotype != unix.SOCK_STREAM && sotype != unix.SOCK_DGRAM {
		return fmt.Errorf("socket type %d: %w", sotype, ErrUnsupported)
	}
	g.sotype = sotype
	if n := g.spec.Network; n != "" && (n == "udp") != (sotype == unix.SOCK_DGRAM) {
		return fmt.Errorf("a %s socket where %s was expected", networkOf(sotype, g.family, g.v6only), n)
	}
	g.sa = sa
	g.addr = sockaddrString(sa)
	if err := g.checkMember(fd); err != nil {
		return err
	}
	unix.CloseOnExec(fd)
	return nil
}

// checkMember checks that fd is a socket of the group's kind, on its
// address, with SO_REUSEPORT, and listening for TCP.
func (g *Group) checkMember(fd int) error {
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	if sotype != g.sotype {
		return fmt.Errorf("socket type %d, want %d", sotype, g.sotype)
	}
	if sa, err := unix.Getsockname(fd); err != nil || sockaddrString(sa) != g.addr {
		return fmt.Errorf("bound to %s, not %s", sockaddrString(sa), g.addr)
	}
	if rp, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || rp == 0 {
		return fmt.Errorf("socket on %s lacks SO_REUSEPORT (ReusePort=yes in the .socket unit): %w", g.addr, ErrUnsupported)
	}
	if sotype == unix.SOCK_STREAM {
		if l, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || l == 0 {
			return fmt.Errorf("TCP socket on %s is not listening", g.addr)
		}
	}
	unix.CloseOnExec(fd)
	return nil
}

// newSocket creates a blocking, close-on-exec socket with SO_REUSEPORT
// (and SO_REUSEADDR for TCP), binds it to sa and, for TCP, listens with
// the kernel's maximum backlog. A TCP socket joins the group when it
// listens, a UDP socket when it binds.
func newSocket(family, sotype, v6only int, sa unix.Sockaddr) (int, error) {
	fd, err := unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if sotype == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("setsockopt SO_REUSEADDR", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("setsockopt SO_REUSEPORT", fmt.Errorf("%w: %w", err, ErrUnsupported))
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fail("bind", fmt.Errorf("address %s is already in use", sockaddrString(sa)))
		}
		return fail("bind", err)
	}
	if sotype == unix.SOCK_STREAM {
		if err := unix.Listen(fd, backlog()); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}

func networkOf(sotype, family, v6only int) string {
	switch {
	case sotype == unix.SOCK_DGRAM:
		return "udp"
	case family == unix.AF_INET6 && v6only == 1:
		return "tcp6"
	}
	return "tcp"
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return "?"
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// backlog is the kernel's maximum listen backlog, so that connections
// queue while no worker accepts instead of being refused.
func backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}
