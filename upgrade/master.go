package upgrade

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"
)

// handoverName is the tableflip file that carries the listeners to a new
// master: one end of a socketpair on which the old master has queued the
// listener descriptors (SCM_RIGHTS) and the generation count.
const handoverName = "handoff-handover"

// handover is what an old master tells its successor, in the first
// message on the hand-over socket; the descriptors follow, at most
// fdsPerMessage per message (the kernel's SCM_MAX_FD is 253): the shared
// listeners' in Names order, then each group's.
type handover struct {
	Generation int      `json:"generation"`
	Banks      []int    `json:"banks,omitempty"`
	Names      []string `json:"names"`
	Groups     []group  `json:"groups,omitempty"`
	Fds        int      `json:"fds"`
	// State is the runner's own record for its successor (Handover.State),
	// opaque here; absent from older masters.
	State json.RawMessage `json:"state,omitempty"`
}

// MaxStateSize bounds Handover.State, in bytes.
const MaxStateSize = 64 << 10

// group is one steered socket group in a hand-over: its state, opaque to
// this package, and how many descriptors it has.
type group struct {
	Name  string          `json:"name"`
	State json.RawMessage `json:"state"`
	Fds   int             `json:"fds"`
}

const fdsPerMessage = 250

// Handover is what a master hands to its successor.
type Handover struct {
	// Generation is the highest generation number used so far.
	Generation int
	// Banks is, per slot, the bank of steered sockets the serving
	// worker uses.
	Banks []int
	// Listeners are the shared sockets.
	Listeners []*Listener
	// Groups are the steered socket groups.
	Groups []Group
	// State, if set, is a JSON value the new master gets as is
	// (InheritedState): what its owner carries across an upgrade besides
	// the sockets (the last reload, recent events). At most MaxStateSize
	// bytes; the new master's owner must check it before it trusts it.
	State json.RawMessage
	// Successor, if set, is called with the new master's pid once it is
	// ready, before it is told that it may speak for the service
	// (AwaitMain): the place to tell systemd the new main pid
	// (MAINPID=), which, with NotifyAccess=main, only the old main
	// process may. pid is 0 if the new master sent none (a version
	// before this hand-over): it then announces itself, which systemd
	// takes only with NotifyAccess=all.
	Successor func(pid int)
}

// successorMsg is what a new master sends its predecessor on the
// hand-over socket once it has read the hand-over: its pid.
type successorMsg struct {
	PID int `json:"pid"`
}

// mainMsg is what the old master answers once the new master is ready
// and announced (Handover.Successor): the new master may speak.
type mainMsg struct {
	Main bool `json:"main"`
}

// Group is a steered socket group in a hand-over: its descriptors, and
// the state the new master rebuilds it from.
type Group struct {
	Name  string
	State json.RawMessage
	Fds   []int
}

// Master is what a master process keeps across its own binary upgrades:
// its listeners, its control socket and its generation count, handed to
// the next master through tableflip.
type Master struct {
	upg      *tableflip.Upgrader
	exe      string
	pinned   string // why exe is the resolved path, not the one started as
	received *handover
	hand     *os.File         // a new master's end of the hand-over socket, until AwaitMain
	fds      map[string]int   // listener descriptors received, by name
	groups   map[string]Group // groups received, by name
}

// Options configure NewMaster.
type Options struct {
	// PIDFile, if set, gets the pid of the master once it serves.
	PIDFile string
	// UpgradeTimeout is how long a new master may take to be ready. It
	// must exceed the workers' ready timeout.
	UpgradeTimeout time.Duration
}

// NewMaster prepares the master for upgrades. In a master started by an
// upgrade, it takes over what the old master handed over.
//
// tableflip restarts os.Args[0]. NewMaster makes it the path this master
// was started as (StartedAs): absolute, so that the current directory
// at the time of the upgrade does not matter, but not resolved through
// symlinks, so that an upgrade runs what the path names then: after
// /opt/handoff/current is flipped to a new release, the new release.
func NewMaster(opts Options) (*Master, error) {
	exe, pinned, err := StartedAs(os.Args[0])
	if err != nil {
		return nil, err
	}
	os.Args[0] = exe
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout, PIDFile: opts.PIDFile})
	if err != nil {
		return nil, fmt.Errorf("tableflip: %w", err)
	}
	m := &Master{upg: upg, exe: exe, pinned: pinned}
	if upg.HasParent() {
		if err := m.receive(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// StartedAs is the path of the running executable as it was started,
// from arg0 (os.Args[0]): made absolute (looked up in PATH if it has no
// slash) and not resolved through symlinks, when it names the running
// executable. Otherwise (an argv[0] set to something else, a binary
// already replaced), the running executable's own path, with symlinks
// resolved. For a master run as root, the path is kept only if nobody
// but root can change what it names (rootOnlyPath); else pinned says
// why the resolved path is used instead (empty when it is not).
func StartedAs(arg0 string) (path, pinned string, err error) {
	running, err := os.Stat("/proc/self/exe")
	if err == nil && arg0 != "" {
		p := arg0
		if !strings.Contains(p, "/") {
			p, err = exec.LookPath(p)
		}
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err == nil {
			if fi, err := os.Stat(p); err == nil && os.SameFile(fi, running) {
				if os.Geteuid() != 0 {
					return p, "", nil
				}
				why := rootOnlyPath(p)
				if why == nil {
					return p, "", nil
				}
				pinned = fmt.Sprintf("upgrades run the file %s resolves to now, not what it names then: %v", p, why)
			}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("find own executable: %w", err)
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	return exe, pinned, nil
}

// Pinned says why upgrades run the file the master's path resolved to
// at start rather than what the path names at the upgrade (a root master
// started through a path others may change), or "" if they follow it.
func (m *Master) Pinned() string { return m.pinned }

// InheritedState is the State the master this one took over from handed
// over (nil if none: no predecessor, or one that sent none). It is valid
// JSON of at most MaxStateSize bytes, and nothing more is checked.
func (m *Master) InheritedState() json.RawMessage {
	if m.received == nil {
		return nil
	}
	return m.received.State
}

// Inherited reports whether this master took over from an older one.
func (m *Master) Inherited() bool { return m.upg.HasParent() }

// FirstGeneration is the number this master's first generation takes:
// one after the last one of the master it took over from, else 1.
func (m *Master) FirstGeneration() int {
	if m.received == nil {
		return 1
	}
	return m.received.Generation + 1
}

// FirstBanks is, per slot, the bank of steered sockets this master's
// first generation takes: the one its predecessor's worker does not use.
func (m *Master) FirstBanks() []int {
	if m.received == nil {
		return nil
	}
	out := make([]int, len(m.received.Banks))
	for i, b := range m.received.Banks {
		out[i] = 1 - b
	}
	return out
}

// InheritedGroup returns the steered group named name that the previous
// master handed over, if any. The caller owns its descriptors; groups
// not taken are closed by DropInherited.
func (m *Master) InheritedGroup(name string) (Group, bool) {
	g, ok := m.groups[name]
	delete(m.groups, name)
	return g, ok
}

// DropInherited closes what the previous master handed over and no
// listener took.
func (m *Master) DropInherited() {
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	m.fds = nil
	for _, g := range m.groups {
		for _, fd := range g.Fds {
			unix.Close(fd)
		}
	}
	m.groups = nil
}

// Listener returns the shared listener for spec: handed over by the
// previous master, else passed by systemd socket activation (activated,
// by FileDescriptorName=; the descriptor taken is removed from the map),
// else bound now. With socket activation, every listener must come from
// it. The caller closes the activated sockets no listener took.
func (m *Master) Listener(spec Spec, activated map[string]int) (*Listener, error) {
	if fd, ok := m.fds[spec.Name]; ok {
		delete(m.fds, spec.Name)
		return fromFd(spec, fd)
	}
	if fd, ok := activated[spec.Name]; ok {
		return fromFd(spec, fd)
	}
	if len(activated) > 0 {
		return nil, fmt.Errorf("listen %s: socket activation passed no socket named %q (FileDescriptorName=); it passed %s", spec, spec.Name, names(activated))
	}
	return Bind(spec)
}

func names(m map[string]int) string {
	var b bytes.Buffer
	for n := range m {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", n)
	}
	return b.String()
}

// ControlListener returns the control socket handed over by the previous
// master, or makes one with create. Either way the socket is registered
// for the next hand-over, and closing it never removes its path: the
// next master serves on it. Remove the path on final shutdown.
func (m *Master) ControlListener(path string, create func() (*net.UnixListener, error)) (*net.UnixListener, error) {
	ln, err := m.upg.Fds.Listener("unix", path)
	if err != nil {
		return nil, fmt.Errorf("inherited control socket: %w", err)
	}
	if ul, ok := ln.(*net.UnixListener); ok && ul != nil {
		ul.SetUnlinkOnClose(false)
		return ul, nil
	}
	ul, err := create()
	if err != nil {
		return nil, err
	}
	if err := m.upg.Fds.AddListener("unix", path, ul); err != nil {
		ul.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ul, nil
}

// AdminListener returns the admin endpoint's TCP listener handed over by
// the previous master (inherited is then true), or makes one with
// create. Either way it is registered for the next hand-over: both
// masters hold it until the old one hands over.
func (m *Master) AdminListener(addr string, create func() (net.Listener, error)) (ln net.Listener, inherited bool, err error) {
	ln, err = m.upg.Fds.Listener("tcp", addr)
	if err != nil {
		return nil, false, fmt.Errorf("inherited admin listener: %w", err)
	}
	if ln != nil {
		return ln, true, nil
	}
	ln, err = create()
	if err != nil {
		return nil, false, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, false, fmt.Errorf("admin listener on %s is not TCP", addr)
	}
	if err := m.upg.Fds.AddListener("tcp", addr, tl); err != nil {
		ln.Close()
		return nil, false, fmt.Errorf("admin listener: %w", err)
	}
	return ln, false, nil
}

// Ready tells tableflip (and the previous master, if any) that this
// master serves; it writes the pid file.
func (m *Master) Ready() error { return m.upg.Ready() }

// Stop ends upgrades for good: the master is shutting down.
func (m *Master) Stop() { m.upg.Stop() }

// BinaryChanged reports whether the executable on disk at the path this
// master was started from differs from the one running: a different
// file with different contents.
func (m *Master) BinaryChanged() (bool, error) {
	onDisk, err := os.Stat(m.exe)
	if err != nil {
		return false, fmt.Errorf("own executable: %w", err)
	}
	running, err := os.Stat("/proc/self/exe")
	if err != nil {
		return false, fmt.Errorf("running executable: %w", err)
	}
	if os.SameFile(onDisk, running) {
		return false, nil
	}
	a, err := hashFile(m.exe)
	if err != nil {
		return false, err
	}
	b, err := hashFile("/proc/self/exe")
	if err != nil {
		return false, err
	}
	return !bytes.Equal(a, b), nil
}

func hashFile(path string) ([]byte, error) {
	// Non-blocking: a FIFO at the path must not hang the reload.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("hash %s: not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// Upgrade starts the executable now on disk as a new master, hands it the
// listeners, the steered groups and the generation count, and waits until
// it is ready (it calls Ready once its own workers are). On success this
// master should retire its workers and exit; on failure it goes on
// serving. If a previous master is still retiring, Upgrade first waits
// for it to exit.
func (m *Master) Upgrade(ctx context.Context, h Handover) error {
	if err := m.upg.WaitForParent(ctx); err != nil && ctx.Err() != nil {
		return fmt.Errorf("wait for the previous master to exit: %w", err)
	}
	pair, err := socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
	if err != nil {
		return fmt.Errorf("hand-over socket: %w", err)
	}
	defer unix.Close(pair[0])
	theirs := os.NewFile(uintptr(pair[1]), handoverName)
	err = m.upg.Fds.AddFile(handoverName, theirs)
	theirs.Close()
	if err != nil {
		return fmt.Errorf("hand-over socket: %w", err)
	}
	if len(h.State) > MaxStateSize {
		return fmt.Errorf("hand-over: a state of %d bytes (at most %d)", len(h.State), MaxStateSize)
	}
	msg := handover{Generation: h.Generation, Banks: h.Banks, State: h.State}
	var fds []int
	for _, l := range h.Listeners {
		msg.Names = append(msg.Names, l.Name)
		fds = append(fds, l.Fd())
	}
	for _, g := range h.Groups {
		msg.Groups = append(msg.Groups, group{Name: g.Name, State: g.State, Fds: len(g.Fds)})
		fds = append(fds, g.Fds...)
	}
	msg.Fds = len(fds)
	b, err := msg.encode()
	if err != nil {
		return fmt.Errorf("hand-over: %w", err)
	}
	// The first message carries the description; every message carries
	// up to fdsPerMessage descriptors.
	for first := true; first || len(fds) > 0; first = false {
		n := min(len(fds), fdsPerMessage)
		var oob []byte
		if n > 0 {
			oob = unix.UnixRights(fds[:n]...)
		}
		payload := []byte{0}
		if first {
			payload = b
		}
		if err := unix.Sendmsg(pair[0], payload, oob, nil, 0); err != nil {
			return fmt.Errorf("hand over listeners: %w", err)
		}
		fds = fds[n:]
	}
	if err := m.upg.Upgrade(); err != nil {
		return fmt.Errorf("new master: %w", err)
	}
	// The new master is ready. It sent its pid when it had read the
	// hand-over; announce it, then tell it that it may speak. (A new
	// master of an older version sent none: it announces itself.)
	if h.Successor != nil {
		h.Successor(successorPID(pair[0]))
	}
	if b, err := json.Marshal(mainMsg{Main: true}); err == nil {
		unix.Sendmsg(pair[0], b, nil, nil, unix.MSG_DONTWAIT) // a successor gone does not hear it
	}
	return nil
}

// successorPID reads the pid a new master sent on the hand-over socket
// fd (0 if none, or not a plausible one).
func successorPID(fd int) int {
	buf := make([]byte, 256)
	n, _, _, _, err := unix.Recvmsg(fd, buf, nil, unix.MSG_DONTWAIT)
	if err != nil || n <= 0 {
		return 0
	}
	var msg successorMsg
	if json.Unmarshal(buf[:n], &msg) != nil || msg.PID <= 0 || msg.PID == os.Getpid() {
		return 0
	}
	return msg.PID
}

// AwaitMain waits, in a master started by an upgrade, until the old
// master has announced this one (Handover.Successor) after it became
// ready (Ready), or at most timeout. It returns an error when the old
// master closed the hand-over socket without a word (an older handoff)
// or timeout passed: the caller then announces itself. It is called
// once; later calls return an error at once.
func (m *Master) AwaitMain(timeout time.Duration) error {
	f := m.hand
	m.hand = nil
	if f == nil {
		return errors.New("no hand-over socket")
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("hand-over socket: %w", err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 256)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("no word from the old master within %s", timeout)
		}
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, rerr = unix.Poll(pfd, int(left.Milliseconds())+1); rerr != nil {
				return
			}
			n, _, _, _, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
		}); err != nil {
			return fmt.Errorf("hand-over socket: %w", err)
		}
		switch {
		case rerr == unix.EINTR || rerr == unix.EAGAIN:
			continue
		case rerr != nil:
			return fmt.Errorf("hand-over socket: %w", rerr)
		case n == 0:
			return errors.New("the old master closed the hand-over socket without a word")
		}
		var msg mainMsg
		if json.Unmarshal(buf[:n], &msg) == nil && msg.Main {
			return nil
		}
	}
}

// receive reads what the old master queued on the hand-over socket.
func (m *Master) receive() error {
	f, err := m.upg.Fds.File(handoverName)
	if err != nil || f == nil {
		return fmt.Errorf("new master: no hand-over from the old master (%v)", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("hand-over socket: %w", err)
	}
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*fdsPerMessage))
	var (
		h    handover
		fds  []int
		rerr error
	)
	fail := func(err error) error {
		for _, fd := range fds {
			unix.Close(fd)
		}
		f.Close()
		return fmt.Errorf("receive hand-over: %w", err)
	}
	for first := true; first || len(fds) < h.Fds; first = false {
		var n, oobn int
		if err := rc.Control(func(fd uintptr) {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT|recvCloexec)
		}); err != nil {
			return fail(err)
		}
		if rerr != nil {
			return fail(rerr)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return fail(err)
		}
		for _, cm := range msgs {
			if got, err := unix.ParseUnixRights(&cm); err == nil {
				fds = append(fds, got...)
			}
		}
		if first {
			if h, err = decodeHandover(buf[:n]); err != nil {
				return fail(err)
			}
			if h.Fds == 0 && len(h.Groups) == 0 {
				// A master from before groups sent its listeners'
				// descriptors in this one message, uncounted.
				h.Fds = len(fds)
			}
		}
	}
	lfds, groups, err := h.assign(fds)
	if err != nil {
		return fail(err)
	}
	m.received, m.fds, m.groups = &h, lfds, groups
	// Tell the old master who we are: it announces us to systemd once
	// we are ready. The socket stays open for its answer (AwaitMain).
	if b, err := json.Marshal(successorMsg{PID: os.Getpid()}); err == nil {
		rc.Control(func(fd uintptr) { unix.Sendmsg(int(fd), b, nil, nil, unix.MSG_DONTWAIT) })
	}
	m.hand = f
	return nil
}

// maxHandoverFds bounds the descriptors a hand-over may describe: a
// master holds far fewer (a listener each, and a group's per worker
// slot and bank), and a successor reads until it has them all.
const maxHandoverFds = 1 << 16

// encode renders the first message of a hand-over.
func (h handover) encode() ([]byte, error) {
	return json.Marshal(h)
}

// decodeHandover parses the first message of a hand-over and checks what
// it describes: the message comes from another process (an older
// handoff, perhaps of another version), and a successor must fail with
// an error on a bad one, never index out of range.
func decodeHandover(b []byte) (handover, error) {
	var h handover
	if err := json.Unmarshal(b, &h); err != nil {
		return handover{}, fmt.Errorf("malformed message from the old master: %w", err)
	}
	bad := func(format string, args ...any) (handover, error) {
		return handover{}, fmt.Errorf("bad message from the old master: "+format, args...)
	}
	if h.Generation < 0 {
		return bad("generation %d", h.Generation)
	}
	if len(h.State) > MaxStateSize {
		return bad("a state of %d bytes (at most %d)", len(h.State), MaxStateSize)
	}
	for i, b := range h.Banks {
		if b != 0 && b != 1 {
			return bad("slot %d uses bank %d (want 0 or 1)", i, b)
		}
	}
	if h.Fds < 0 || h.Fds > maxHandoverFds {
		return bad("%d descriptors (want 0 to %d)", h.Fds, maxHandoverFds)
	}
	names := map[string]bool{}
	for _, n := range h.Names {
		if err := checkName(n); err != nil {
			return bad("listener %w", err)
		}
		if names[n] {
			return bad("listener %q twice", n)
		}
		names[n] = true
	}
	total := len(h.Names)
	groups := map[string]bool{}
	for _, g := range h.Groups {
		if groups[g.Name] {
			return bad("group %q twice", g.Name)
		}
		groups[g.Name] = true
		if g.Fds < 0 || g.Fds > maxHandoverFds {
			return bad("group %q has %d descriptors", g.Name, g.Fds)
		}
		total += g.Fds
	}
	if total > maxHandoverFds {
		return bad("%d descriptors (want at most %d)", total, maxHandoverFds)
	}
	return h, nil
}

// assign gives the descriptors received to the listeners and groups of
// h, in the order the old master sent them: the listeners' in Names
// order, then each group's.
func (h handover) assign(fds []int) (map[string]int, map[string]Group, error) {
	want := len(h.Names)
	for _, g := range h.Groups {
		want += g.Fds
	}
	if want != h.Fds || len(fds) != h.Fds {
		return nil, nil, fmt.Errorf("the old master described %d descriptors and sent %d", want, len(fds))
	}
	lfds := make(map[string]int, len(h.Names))
	for i, name := range h.Names {
		lfds[name] = fds[i]
	}
	rest := fds[len(h.Names):]
	groups := make(map[string]Group, len(h.Groups))
	for _, g := range h.Groups {
		groups[g.Name] = Group{Name: g.Name, State: g.State, Fds: rest[:g.Fds:g.Fds]}
		rest = rest[g.Fds:]
	}
	return lfds, groups, nil
}
