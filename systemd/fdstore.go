package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// storePrefix starts the FDNAME= of every descriptor handoff keeps in
// systemd's file descriptor store; other names (a .socket unit's) are not
// handoff's.
const storePrefix = "handoff."

// fdnameMax is systemd's limit on a FDNAME= (FDNAME_MAX).
const fdnameMax = 255

// maxStoreIndex bounds the numbers in a store name: a slot (the
// supervisor allows 1024) or a selector descriptor's position.
const maxStoreIndex = 1 << 16

// Kinds of descriptors in the store.
const (
	// KindShared is a listener's one socket, shared by every worker.
	KindShared = 'l'
	// KindMember is a socket of a steered listener: a slot and a bank.
	KindMember = 's'
	// KindSelector is a descriptor of a steered listener's eBPF
	// selector (program or map), Index giving its position.
	KindSelector = 'e'
)

// StoreName is what one descriptor in systemd's fd store is to handoff.
// Its FDNAME= is "handoff.l.NAME" for a shared socket,
// "handoff.s.SLOT.BANK.NAME" for a socket of a steered group and
// "handoff.e.INDEX.NAME" for its selector, NAME being the listener's name
// (printable ASCII without spaces or ':'). Each descriptor has a name of
// its own: systemd passes descriptors that share a name in no order it
// documents.
type StoreName struct {
	Kind     byte
	Listener string
	// Slot and Bank, for KindMember; Index, for KindSelector.
	Slot, Bank, Index int
}

// FDName returns the FDNAME= of n, or an error if systemd would refuse
// it: a listener name with characters systemd does not allow, or one
// too long for the whole to fit 255 bytes (names of 238 bytes or fewer
// always fit).
func (n StoreName) FDName() (string, error) {
	var s string
	switch n.Kind {
	case KindShared:
		s = storePrefix + "l." + n.Listener
	case KindMember:
		if n.Bank != 0 && n.Bank != 1 || n.Slot < 0 || n.Slot >= maxStoreIndex {
			return "", fmt.Errorf("fd store name for %q: slot %d bank %d out of range", n.Listener, n.Slot, n.Bank)
		}
		s = storePrefix + "s." + strconv.Itoa(n.Slot) + "." + strconv.Itoa(n.Bank) + "." + n.Listener
	case KindSelector:
		if n.Index < 0 || n.Index >= maxStoreIndex {
			return "", fmt.Errorf("fd store name for %q: index %d out of range", n.Listener, n.Index)
		}
		s = storePrefix + "e." + strconv.Itoa(n.Index) + "." + n.Listener
	default:
		return "", fmt.Errorf("fd store name for %q: unknown kind %q", n.Listener, n.Kind)
	}
	if err := checkListener(n.Listener); err != nil {
		return "", fmt.Errorf("fd store name for %q: %w", truncate([]byte(n.Listener), 40), err)
	}
	if len(s) > fdnameMax {
		return "", fmt.Errorf("fd store name for %q: %d bytes, systemd allows %d", truncate([]byte(n.Listener), 40), len(s), fdnameMax)
	}
	return s, nil
}

// checkListener checks a listener name the way handoff's --listen does.
func checkListener(name string) error {
	if name == "" {
		return errors.New("empty listener name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == ':' {
			return errors.New("listener name: only printable ASCII without spaces or ':'")
		}
	}
	return nil
}

// ParseStoreName reads a FDNAME= that FDName made. It returns ok false,
// and no error, for a name that is not handoff's (no "handoff." prefix),
// and an error for one that has the prefix but is malformed (the caller
// closes that descriptor and removes the name from the store). Numbers
// must be written as FDName writes them, so that a name parses only if
// it is exactly what FDName returns.
func ParseStoreName(s string) (n StoreName, ok bool, err error) {
	rest, ours := strings.CutPrefix(s, storePrefix)
	if !ours {
		return StoreName{}, false, nil
	}
	bad := func(why string) (StoreName, bool, error) {
		// At most 40 bytes of the name, each of which %q may write
		// as four characters: the line stays short.
		return StoreName{}, true, fmt.Errorf("fd store name %s: %s", quoteBounded(s, 40), why)
	}
	if len(s) > fdnameMax {
		return bad("longer than 255 bytes")
	}
	if len(rest) < 2 || rest[1] != '.' {
		return bad("no kind")
	}
	n.Kind, rest = rest[0], rest[2:]
	num := func() (int, bool) {
		field, after, found := strings.Cut(rest, ".")
		if !found {
			return 0, false
		}
		v, err := strconv.Atoi(field)
		if err != nil || v < 0 || v >= maxStoreIndex || strconv.Itoa(v) != field {
			return 0, false
		}
		rest = after
		return v, true
	}
	switch n.Kind {
	case KindShared:
	case KindMember:
		var ok1, ok2 bool
		n.Slot, ok1 = num()
		n.Bank, ok2 = num()
		if !ok1 || !ok2 || n.Bank > 1 {
			return bad("want handoff.s.SLOT.BANK.NAME")
		}
	case KindSelector:
		var ok1 bool
		if n.Index, ok1 = num(); !ok1 {
			return bad("want handoff.e.INDEX.NAME")
		}
	default:
		return bad("unknown kind")
	}
	if err := checkListener(rest); err != nil {
		return bad(err.Error())
	}
	n.Listener = rest
	return n, true, nil
}

// StoredSocket is a descriptor systemd passed back from its fd store.
type StoredSocket struct {
	Name StoreName
	Fd   int
}

// SplitStored separates the descriptors systemd passed (ActivationSockets)
// into those handoff stored (names from FDName), those of socket
// activation (other names), and those with handoff's prefix but a
// malformed name (bad: close them, and remove their names from the store).
func SplitStored(socks []Socket) (stored []StoredSocket, activated, bad []Socket) {
	for _, s := range socks {
		n, ours, err := ParseStoreName(s.Name)
		switch {
		case !ours:
			activated = append(activated, s)
		case err != nil:
			bad = append(bad, s)
		default:
			stored = append(stored, StoredSocket{Name: n, Fd: s.Fd})
		}
	}
	return stored, activated, bad
}

// FdStore keeps descriptors in systemd's file descriptor store
// (sd_pid_notify_with_fds(3) with FDSTORE=1), so that they outlive the
// process: when systemd restarts the service, it passes them back in
// LISTEN_FDS with their names in LISTEN_FDNAMES. The unit must set
// FileDescriptorStoreMax= to at least the number of descriptors stored:
// systemd silently closes those beyond it (none at all by default).
type FdStore struct {
	socket  string        // NOTIFY_SOCKET
	timeout time.Duration // for one message
}

// NewFdStore returns the fd store of the unit that runs this process, or
// nil without NOTIFY_SOCKET (not run by systemd, or not Type=notify).
func NewFdStore() *FdStore {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" {
		return nil
	}
	return &FdStore{socket: s, timeout: 5 * time.Second}
}

// Max returns FileDescriptorStoreMax= as systemd 254 and later tell it
// ($FDSTORE), and false where it is not known: an older systemd, which
// does not say, or a store of size 0, for which newer ones do not set
// the variable either.
func Max() (int, bool) {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Store sends fd to the store under name (FDNAME=, see StoreName.FDName).
// systemd keeps a duplicate; fd stays the caller's. FDPOLL=0 keeps
// systemd from dropping it on an error event: a BPF map reports
// EPOLLERR to any poll, and handoff removes what it stored itself. Storing a descriptor
// that is already in the store (the same open file) changes nothing, its
// first name included. It returns an error if the message could not be
// sent; that systemd accepted it, it does not tell (a full store, or
// FileDescriptorStoreMax=0, drops it with a line in systemd's log only).
func (s *FdStore) Store(name string, fd int) error {
	if err := s.send("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, unix.UnixRights(fd)); err != nil {
		return fmt.Errorf("fd store: keep %s: %w", name, err)
	}
	return nil
}

// Remove asks systemd to close every descriptor stored under name
// (FDSTOREREMOVE=1). A name not in the store is no error to systemd, and
// none here: only a message that could not be sent is.
func (s *FdStore) Remove(name string) error {
	if err := s.send("FDSTOREREMOVE=1\nFDNAME="+name, nil); err != nil {
		return fmt.Errorf("fd store: remove %s: %w", name, err)
	}
	return nil
}

// Barrier returns once systemd has processed every message sent before it
// (BARRIER=1, systemd 246 and later: systemd closes the descriptor that
// comes with it), or an error after timeout or if it could not be sent.
func (s *FdStore) Barrier(timeout time.Duration) error {
	p, err := cloexecPipe()
	if err != nil {
		return fmt.Errorf("fd store: barrier: pipe: %w", err)
	}
	defer unix.Close(p[0])
	err = s.send("BARRIER=1", unix.UnixRights(p[1]))
	unix.Close(p[1])
	if err != nil {
		return fmt.Errorf("fd store: barrier: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("fd store: barrier: systemd did not answer within %s", timeout)
		}
		fds := []unix.PollFd{{Fd: int32(p[0])}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fd store: barrier: poll: %w", err)
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return nil
		}
	}
}

// send sends one notify datagram with control data oob, blocking at most
// s.timeout if systemd's queue is full.
func (s *FdStore) send(msg string, oob []byte) error {
	addr := s.socket
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	} else if !strings.HasPrefix(addr, "/") {
		return fmt.Errorf("NOTIFY_SOCKET=%q: not a unix socket path", truncate([]byte(addr), 60))
	}
	fd, err := cloexecSocket(unix.AF_UNIX, unix.SOCK_DGRAM)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(s.timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("setsockopt SO_SNDTIMEO: %w", err)
	}
	for {
		err = unix.Sendmsg(fd, []byte(msg), oob, &unix.SockaddrUnix{Name: addr}, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send to %s: %w", s.socket, err)
	}
	return nil
}

// quoteBounded quotes s as %q does, but at most max bytes of it, and then
// at most max characters of the quoted form, ending in "…" where cut.
func quoteBounded(s string, max int) string {
	q := fmt.Sprintf("%q", truncate([]byte(s), max))
	if len(q) > max {
		return q[:max] + "…"
	}
	return q
}
