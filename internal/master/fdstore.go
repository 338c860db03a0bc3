package master

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/sockaddr"
	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// howRestored is a listener's origin after a crash: the sockets systemd
// kept in its fd store.
const howRestored = "kept by systemd while no master ran"

// barrierTimeout bounds the wait for systemd to have closed the stored
// copies of sockets the master gave up, before it binds their address.
const barrierTimeout = 2 * time.Second

// fdStore keeps every listening socket of the master (each socket of a
// steered group, both banks, and its eBPF selector's descriptors) in
// systemd's fd store, so that a master that crashes leaves them open:
// connections wait in their backlogs (the dead master's selector still
// steers them) until systemd has restarted the master, which takes them
// back (restoreListener). What is stored follows the listeners the master
// has committed: sync adds the new ones and removes the names of those
// gone (a configuration reload's outcome, a group grown by scaling).
type fdStore struct {
	sd  *systemd.FdStore // nil: not run by systemd
	log hclog.Logger

	mu sync.Mutex
	// stored are the names in the store, as far as this master knows,
	// each with the identity of the socket under it (identity): a
	// listener whose name stays while its address changes (a
	// configuration reload) has new sockets under the same names.
	stored map[string]uint64
	// stale are names in the store whose descriptor is not the one this
	// master uses (a crashed master's selector that was replaced): sync
	// replaces or removes them.
	stale map[string]bool
	// needed is the number of descriptors last stored, and warned the
	// number last warned about (FileDescriptorStoreMax= too small).
	needed, warned int
	retired        bool // handed over: the new master owns the store
	tooMany        bool // said that the sockets exceed what a restart takes back
	kick           chan struct{}
	// lastErr and skipped keep failures from being logged again at
	// every sync: once until the store works again, once per name.
	lastErr string
	skipped map[string]bool
}

func newFdStore(log hclog.Logger) *fdStore {
	return &fdStore{sd: systemd.NewFdStore(), log: log, stored: map[string]uint64{}, stale: map[string]bool{}, skipped: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// storeEntries lists the descriptors of ls by FDNAME: those a listener
// name too long for systemd leaves out are reported in skipped.
func storeEntries(ls []listener) (want map[string]int, skipped []error) {
	want = map[string]int{}
	add := func(n systemd.StoreName, fd int) {
		name, err := n.FDName()
		if err != nil {
			skipped = append(skipped, err)
			return
		}
		want[name] = fd
	}
	for _, l := range ls {
		if l.Group == nil {
			add(systemd.StoreName{Kind: systemd.KindShared, Listener: l.Name}, l.shared.Fd())
			continue
		}
		st, fds := l.Group.Export()
		n := steer.Banks * st.Slots
		if len(fds) < n {
			continue // closed
		}
		for i, fd := range fds[:n] {
			add(systemd.StoreName{Kind: systemd.KindMember, Listener: l.Name, Slot: i / steer.Banks, Bank: i % steer.Banks}, fd)
		}
		for i, fd := range fds[n:] {
			add(systemd.StoreName{Kind: systemd.KindSelector, Listener: l.Name, Index: i}, fd)
		}
	}
	return want, skipped
}

// fitsRestart reports whether a restarted master can be passed want
// back: few enough descriptors, and names short enough in all.
func fitsRestart(want map[string]int) bool {
	if len(want) > systemd.MaxPassed {
		return false
	}
	size := 0
	for name := range want {
		size += len(name) + 1 // and a colon
	}
	return size <= systemd.MaxPassedNames
}

// sync makes the store hold the descriptors of ls and nothing else of
// this master's. Sockets already stored are not sent again (systemd would
// ignore a descriptor it holds anyway); a selector descriptor's name is
// removed before it is stored, since the store may hold another
// selector's under it (a master before a hand-over). Failures are logged:
// the master serves on without the store.
func (s *fdStore) sync(ls []listener) {
	if s == nil || s.sd == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return
	}
	want, skipped := storeEntries(ls)
	if !fitsRestart(want) {
		// A restarted master could not take them back (its start
		// would fail, again and again): keep none.
		if !s.tooMany {
			s.tooMany = true
			s.log.Warn("too many listening sockets to keep in systemd's fd store: a master crash will close them", "sockets", len(want), "max", systemd.MaxPassed)
		}
		want = map[string]int{}
	} else {
		s.tooMany = false
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	added := 0
	for _, name := range names {
		id := identity(want[name])
		old, had := s.stored[name]
		if had && old == id && id != 0 && !s.stale[name] {
			continue
		}
		// Another socket under the name goes first: a replaced one,
		// a crashed master's selector, or a selector the store may
		// hold from a master before a hand-over.
		if n, _, _ := systemd.ParseStoreName(name); had || n.Kind == systemd.KindSelector || s.stale[name] {
			if err := s.sd.Remove(name); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(s.stored, name)
		}
		if err := s.sd.Store(name, want[name]); err != nil {
			errs = append(errs, err)
			continue
		}
		s.stored[name] = id
		delete(s.stale, name)
		added++
	}
	removed := 0
	for name := range s.stored {
		if _, ok := want[name]; ok {
			continue
		}
		if err := s.sd.Remove(name); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.stored, name)
		delete(s.stale, name)
		removed++
	}
	switch {
	case len(errs) > 0 && errs[0].Error() != s.lastErr:
		s.lastErr = errs[0].Error()
		s.log.Warn("cannot keep the listening sockets in systemd's fd store: a crash of the master would close them", "failed", len(errs), "error", errs[0])
	case len(errs) == 0 && s.lastErr != "":
		s.lastErr = ""
		s.log.Info("listening sockets kept in systemd's fd store again")
	}
	for _, err := range skipped {
		if !s.skipped[err.Error()] && len(s.skipped) < 64 {
			s.skipped[err.Error()] = true
			s.log.Warn("a listening socket is not kept in systemd's fd store", "error", err)
		}
	}
	if added > 0 || removed > 0 {
		s.log.Debug("systemd's fd store updated", "added", added, "removed", removed, "held", len(s.stored))
	}
	s.checkMax(len(want))
}

// checkMax says, once per size, how many descriptors the unit must let
// systemd keep. systemd 254 and later tell the limit ($FDSTORE); older
// ones do not, and drop what exceeds it without a word to the master.
func (s *fdStore) checkMax(n int) {
	if n == s.needed {
		return
	}
	s.needed = n
	max, known := systemd.Max()
	switch {
	case known && max < n && s.warned != n:
		s.warned = n
		s.log.Warn("systemd's fd store is too small for the listening sockets: set FileDescriptorStoreMax= in the unit, or a master crash refuses connections", "needed", n, "FileDescriptorStoreMax", max)
	case !known:
		s.log.Info("listening sockets kept in systemd's fd store; the unit needs FileDescriptorStoreMax= of at least this many, or systemd drops them", "descriptors", n)
	}
}

// retire stops changing the store: the master handed over to a new one,
// which stores the same sockets (and closing this master's copies must
// not remove them).
func (s *fdStore) retire() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.retired = true
	s.mu.Unlock()
}

// poke asks for a sync soon (a group may have grown); it never blocks.
func (s *fdStore) poke() {
	if s == nil || s.sd == nil {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run syncs the store with the runner's listeners on each poke, until
// done is closed.
func (s *fdStore) run(done <-chan struct{}, listeners func() []listener) {
	if s == nil || s.sd == nil {
		return
	}
	for {
		select {
		case <-done:
			return
		case <-s.kick:
			s.sync(listeners())
		}
	}
}

// forget removes names from the store and waits until systemd has
// closed its copies (the master is about to bind the same address).
func (s *fdStore) forget(names []string) {
	if s == nil || s.sd == nil || len(names) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range names {
		if err := s.sd.Remove(name); err != nil {
			s.log.Warn("cannot remove a socket from systemd's fd store", "error", err)
			return
		}
		delete(s.stored, name)
	}
	if err := s.sd.Barrier(barrierTimeout); err != nil {
		s.log.Warn("systemd did not confirm closing the sockets it kept", "error", err)
	}
}

// adopted records what systemd passed back for l as stored: the sockets
// (and selector) l now uses, and replaced, names in the store whose
// descriptors l does not use (a crashed master's selector it replaced),
// which sync replaces or removes.
func (s *fdStore) adopted(l listener, replaced []string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range replaced {
		s.stored[n] = 0
		s.stale[n] = true
	}
	want, _ := storeEntries([]listener{l})
	for n, fd := range want {
		if !s.stale[n] {
			s.stored[n] = identity(fd)
		}
	}
}

// identity tells a socket from another: its inode (a descriptor's number
// may change while the socket stays). 0 if it cannot be read.
func identity(fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return st.Ino
}

// storedListener is what systemd passed back for one listener.
type storedListener struct {
	shared  int            // a shared socket, or -1
	members map[[2]int]int // {slot, bank} → socket of a steered group
	sel     map[int]int    // index → selector descriptor
	names   map[int]string // descriptor → its FDNAME
}

func (sl *storedListener) close() {
	for fd := range sl.names {
		unix.Close(fd)
	}
}

func (sl *storedListener) fdNames() []string {
	var out []string
	for _, n := range sl.names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// selectorNames are the FDNAMEs of the selector's descriptors.
func (sl *storedListener) selectorNames() []string {
	var out []string
	for _, fd := range sl.sel {
		out = append(out, sl.names[fd])
	}
	sort.Strings(out)
	return out
}

// restoring is what a master restarted by systemd takes back from the
// fd store while it opens its listeners.
type restoring struct {
	store     *fdStore
	listeners map[string]*storedListener // not yet taken
}

func newRestoring(store *fdStore, stored []systemd.StoredSocket) *restoring {
	r := &restoring{store: store, listeners: map[string]*storedListener{}}
	for _, s := range stored {
		sl := r.listeners[s.Name.Listener]
		if sl == nil {
			sl = &storedListener{shared: -1, members: map[[2]int]int{}, sel: map[int]int{}, names: map[int]string{}}
			r.listeners[s.Name.Listener] = sl
		}
		name, _ := s.Name.FDName()
		sl.names[s.Fd] = name
		switch s.Name.Kind {
		case systemd.KindShared:
			if sl.shared >= 0 {
				// Two under one name: keep one, the other is
				// closed with the rest below.
				continue
			}
			sl.shared = s.Fd
		case systemd.KindMember:
			key := [2]int{s.Name.Slot, s.Name.Bank}
			if _, dup := sl.members[key]; dup {
				unix.Close(s.Fd) // two under one name: the first stays
				delete(sl.names, s.Fd)
				continue
			}
			sl.members[key] = s.Fd
		case systemd.KindSelector:
			if _, dup := sl.sel[s.Name.Index]; dup {
				unix.Close(s.Fd)
				delete(sl.names, s.Fd)
				continue
			}
			sl.sel[s.Name.Index] = s.Fd
		}
	}
	return r
}

// take returns what systemd kept for the listener name, if anything.
func (r *restoring) take(name string) *storedListener {
	if r == nil {
		return nil
	}
	sl := r.listeners[name]
	delete(r.listeners, name)
	return sl
}

// drop closes what no listener took and removes it from the store: a
// listener the configuration no longer names.
func (r *restoring) drop() {
	if r == nil {
		return
	}
	var names []string
	for _, sl := range r.listeners {
		sl.close()
		names = append(names, sl.fdNames()...)
	}
	r.listeners = nil
	if len(names) > 0 {
		r.store.log.Info("sockets kept by systemd for listeners the configuration no longer names are closed", "count", len(names))
		r.store.forget(names)
	}
}

// restoreListener re-creates a listener from the sockets systemd kept for
// it. A steered group needs every socket of every slot; its eBPF selector
// comes along when it was stored. On error every descriptor of sl is
// closed; the caller removes them from the store and binds anew. kept
// says whether the group's selector is the one systemd kept.
func restoreListener(o *config.Options, lc config.Listen, sl *storedListener, m *upgrade.Master, log hclog.Logger) (l listener, kept bool, err error) {
	spec := lc.Spec
	used := map[int]bool{}
	fail := func(err error) (listener, bool, error) {
		for fd := range sl.names {
			if !used[fd] {
				unix.Close(fd)
			}
		}
		return listener{}, false, err
	}
	if len(sl.members) == 0 {
		l, err := restoreShared(lc, sl, m, used)
		if err != nil {
			return fail(err)
		}
		return l, false, nil
	}
	if sl.shared >= 0 {
		return fail(errors.New("both a shared socket and a steered group"))
	}
	socks, sel, err := storedSockets(sl, used)
	if err != nil {
		return fail(err)
	}
	mode, wantSteer := steerMode(string(o.Balance))
	opts := steer.Options{Mode: mode}
	switch o.SteerBPF {
	case "ebpf":
		opts.Mechanism = steer.EBPF
	case "cbpf":
		opts.Mechanism = steer.CBPF
	}
	for _, fd := range append(slices.Clone(socks), sel...) {
		used[fd] = true
	}
	// Restore owns socks and sel from here, and closes them on error.
	grp, err := steer.Restore(spec, opts, socks, sel)
	if err != nil {
		return fail(err)
	}
	if err := grp.Grow(o.Workers); err != nil {
		grp.Close()
		return fail(fmt.Errorf("listen %s: %w", spec, err))
	}
	if !wantSteer {
		log.Warn("listener stays steered as the crashed master had it; a stop and start makes it shared", "name", spec.Name)
	}
	if why := grp.Fallback(); why != nil {
		log.Info("steering with classic BPF", "name", spec.Name, "reason", why)
	}
	selector := "new"
	if grp.AdoptedSelector() {
		selector, kept = "kept", true
	}
	log.Info("steered group restored from systemd's fd store", "name", spec.Name, "slots", len(socks)/steer.Banks, "active", fmt.Sprint(grp.Active()), "selector", selector, "mechanism", string(grp.Mechanism()))
	return groupListener(spec, grp, howRestored), kept, nil
}

// restoreShared takes back a shared listener's socket from what systemd
// kept, and closes the rest of sl's descriptors. On error the caller
// closes those not marked in used.
func restoreShared(lc config.Listen, sl *storedListener, m *upgrade.Master, used map[int]bool) (listener, error) {
	spec := lc.Spec
	if sl.shared < 0 {
		return listener{}, errors.New("only selector descriptors, no socket")
	}
	if err := checkStoredAddr(spec, sl.shared); err != nil {
		return listener{}, err
	}
	used[sl.shared] = true
	sh, err := m.ListenerWith(spec, map[string]int{spec.Name: sl.shared}, unixOptions(lc))
	if err != nil {
		return listener{}, err
	}
	for fd := range sl.names {
		if fd != sl.shared {
			unix.Close(fd)
		}
	}
	return listener{
		Listener: workers.Listener{Name: sh.Name, Network: sh.Network, Addr: sh.Addr, Fd: sh.Fd()},
		shared:   sh,
		how:      howRestored,
	}, nil
}

// storedSockets orders a steered group's kept sockets by slot and bank,
// and its selector's descriptors, if all of them were kept (else none:
// the group gets a new selector, and the partial one is closed). It
// marks in used what it hands on or closes.
func storedSockets(sl *storedListener, used map[int]bool) (socks, sel []int, err error) {
	slots := 0
	for k := range sl.members {
		slots = max(slots, k[0]+1)
	}
	socks = make([]int, 0, steer.Banks*slots)
	for s := 0; s < slots; s++ {
		for b := 0; b < steer.Banks; b++ {
			fd, ok := sl.members[[2]int{s, b}]
			if !ok {
				return nil, nil, fmt.Errorf("no socket for slot %d bank %d of %d slots (FileDescriptorStoreMax= too small?)", s, b, slots)
			}
			socks = append(socks, fd)
		}
	}
	for i := 0; i < len(sl.sel); i++ {
		fd, ok := sl.sel[i]
		if !ok {
			sel = nil
			break
		}
		sel = append(sel, fd)
	}
	for _, fd := range sl.sel {
		if !slices.Contains(sel, fd) {
			unix.Close(fd)
			used[fd] = true
		}
	}
	return socks, sel, nil
}

// checkStoredAddr checks that a stored shared socket is where spec
// listens: a unix socket at its path, or an IP socket of the right type
// on its address (any port for port 0).
func checkStoredAddr(spec upgrade.Spec, fd int) error {
	sotype, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("not a socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		if spec.Network != "unix" || u.Name != spec.Address {
			return fmt.Errorf("a unix socket at %q, where %s was expected", u.Name, spec)
		}
		// A master that stopped cleanly unlinked the path, while
		// systemd kept the socket (Restart= after a clean exit, or
		// systemctl restart): nobody could connect to it.
		var st unix.Stat_t
		if err := unix.Lstat(u.Name, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return fmt.Errorf("the unix socket kept for %s has no path any more", spec)
		}
		return nil
	}
	if spec.Network == "unix" || (spec.Network == "udp") != (sotype == unix.SOCK_DGRAM) {
		return fmt.Errorf("a socket of another kind, where %s was expected", spec)
	}
	a, err := sockaddr.Resolve(spec.Network, spec.Address)
	if err != nil {
		return err
	}
	cands := []sockaddr.Addr{a}
	if a.DualStack {
		cands = append(cands, a.IPv4())
	}
	for _, c := range cands {
		if sameIPAddr(c.Sockaddr, sa) {
			return nil
		}
	}
	return fmt.Errorf("a socket on another address, where %s was expected", spec)
}

// sameIPAddr compares two IP socket addresses; port 0 in want matches
// any.
func sameIPAddr(want, got unix.Sockaddr) bool {
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

// restoredBanks is, per slot, the bank where the restored groups' dead
// selector steered connections (steer.Group.Active): the first
// generation starts there, so that its workers take the connections that
// waited. nil if no listener was restored steered.
func restoredBanks(ls []listener) []int {
	for _, l := range ls {
		if l.Group == nil || l.how != howRestored {
			continue
		}
		active := l.Group.Active()
		if len(active) == 0 {
			continue
		}
		banks := make([]int, l.Group.Slots())
		for _, t := range active {
			if t.Slot < len(banks) {
				banks[t.Slot] = t.Bank
			}
		}
		return banks
	}
	return nil
}
