package master

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/steer"
	"github.com/handoff-dev/handoff/systemd"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// fakeStore is the receiving end of NOTIFY_SOCKET: what a sync sent is
// queued when sync returns, so drain reads it without waiting.
type fakeStore struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeStore(t *testing.T) *fakeStore {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("FDSTORE", "")
	return &fakeStore{t: t, conn: conn}
}

// drain returns the messages queued, one line each ("FDSTORE=1 NAME" or
// "FDSTOREREMOVE=1 NAME"), sorted; each FDSTORE=1 must bring one
// descriptor, which it closes.
func (f *fakeStore) drain() []string {
	f.t.Helper()
	rc, err := f.conn.SyscallConn()
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(16))
	rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			if err != nil {
				return true
			}
			var fds []int
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for i := range msgs {
				got, _ := unix.ParseUnixRights(&msgs[i])
				fds = append(fds, got...)
			}
			for _, d := range fds {
				unix.Close(d)
			}
			fields := map[string]string{}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				k, v, _ := strings.Cut(line, "=")
				fields[k] = v
			}
			switch {
			case fields["FDSTORE"] == "1":
				if len(fds) != 1 || fields["FDPOLL"] != "0" {
					f.t.Errorf("%q came with %d descriptors", buf[:n], len(fds))
				}
				out = append(out, "FDSTORE=1 "+fields["FDNAME"])
			case fields["FDSTOREREMOVE"] == "1":
				out = append(out, "FDSTOREREMOVE=1 "+fields["FDNAME"])
			default:
				f.t.Errorf("unexpected message %q", buf[:n])
			}
		}
	})
	slices.Sort(out)
	return out
}

func testGroup(t *testing.T, name string, slots int) listener {
	t.Helper()
	spec, err := upgrade.ParseSpec(name + "=tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := steer.New(spec, steer.Options{Slots: slots, Mechanism: steer.CBPF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return groupListener(spec, g, "bound")
}

// The store follows the listeners: every socket once, under its own
// name; a grown group's new sockets; the name of a listener gone removed;
// nothing at all once the master handed over.
func TestFdStoreSync(t *testing.T) {
	f := newFakeStore(t)
	spec, err := upgrade.ParseSpec("a=tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := upgrade.Bind(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	shared := listener{Listener: workers.Listener{Name: "a", Fd: sh.Fd()}, shared: sh}
	group := testGroup(t, "b", 2)

	s := newFdStore(hclog.NewNullLogger())
	s.sync([]listener{shared, group})
	want := []string{"FDSTORE=1 handoff.l.a", "FDSTORE=1 handoff.s.0.0.b", "FDSTORE=1 handoff.s.0.1.b", "FDSTORE=1 handoff.s.1.0.b", "FDSTORE=1 handoff.s.1.1.b"}
	if got := f.drain(); !slices.Equal(got, want) {
		t.Fatalf("first sync sent %q, want %q", got, want)
	}
	s.sync([]listener{shared, group})
	if got := f.drain(); len(got) != 0 {
		t.Fatalf("a sync with nothing new sent %q", got)
	}
	if err := group.Group.Grow(3); err != nil {
		t.Fatal(err)
	}
	s.sync([]listener{shared, group})
	if got, want := f.drain(), []string{"FDSTORE=1 handoff.s.2.0.b", "FDSTORE=1 handoff.s.2.1.b"}; !slices.Equal(got, want) {
		t.Fatalf("after growing to 3 slots: sent %q, want %q", got, want)
	}
	s.sync([]listener{group})
	if got, want := f.drain(), []string{"FDSTOREREMOVE=1 handoff.l.a"}; !slices.Equal(got, want) {
		t.Fatalf("after listener a went: sent %q, want %q", got, want)
	}
	s.retire()
	s.sync(nil)
	if got := f.drain(); len(got) != 0 {
		t.Fatalf("a retired store sent %q", got)
	}
}

// stored returns what systemd would pass back for g: duplicates of its
// descriptors under the names the master stored them.
func stored(t *testing.T, l listener) []systemd.StoredSocket {
	t.Helper()
	want, skipped := storeEntries([]listener{l})
	if len(skipped) > 0 {
		t.Fatal(skipped)
	}
	var out []systemd.StoredSocket
	for name, fd := range want {
		n, _, err := systemd.ParseStoreName(name)
		if err != nil {
			t.Fatal(err)
		}
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, systemd.StoredSocket{Name: n, Fd: d})
	}
	return out
}

func isClosed(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return errors.Is(err, unix.EBADF)
}

// A restarted master takes a steered group back from what systemd kept,
// grown to its worker count; sockets that do not fit (another address, a
// slot missing) are refused with one line and closed.
func TestRestoreListener(t *testing.T) {
	old := testGroup(t, "http", 2)
	addr := old.Group.Addr()
	o := &config.Options{Workers: 3, SteerBPF: "cbpf"}
	log := hclog.NewNullLogger()

	r := newRestoring(nil, stored(t, old))
	sl := r.take("http")
	if sl == nil || r.take("http") != nil || r.take("other") != nil {
		t.Fatal("take: want the listener's sockets once")
	}
	spec, _ := upgrade.ParseSpec("http=tcp://" + addr)
	l, kept, err := restoreListener(o, config.Listen{Spec: spec}, sl, nil, log)
	if err != nil || kept {
		t.Fatalf("restoreListener: kept %v, %v; want a classic group, no selector kept", kept, err)
	}
	defer l.Group.Close()
	if l.how != howRestored || l.Group.Addr() != addr || l.Group.Slots() != 3 {
		t.Errorf("restored %q on %s with %d slots, want %s with 3", l.how, l.Group.Addr(), l.Group.Slots(), addr)
	}
	if banks := restoredBanks([]listener{l}); !slices.Equal(banks, []int{0, 0, 0}) {
		t.Errorf("restoredBanks = %v, want bank 0 of 3 slots", banks)
	}

	for _, c := range []struct {
		what string
		spec string
		drop func([]systemd.StoredSocket) []systemd.StoredSocket
		want string
	}{
		{"another port", "http=tcp://127.0.0.1:1", nil, "where http=tcp://127.0.0.1:1 was expected"},
		{"udp", "http=udp://" + addr, nil, "where udp was expected"},
		{"a slot missing", "http=tcp://" + addr, func(s []systemd.StoredSocket) []systemd.StoredSocket {
			return slices.DeleteFunc(s, func(x systemd.StoredSocket) bool {
				if x.Name.Kind == systemd.KindMember && x.Name.Slot == 0 && x.Name.Bank == 1 {
					unix.Close(x.Fd)
					return true
				}
				return false
			})
		}, "FileDescriptorStoreMax= too small"},
	} {
		socks := stored(t, old)
		if c.drop != nil {
			socks = c.drop(socks)
		}
		sl := newRestoring(nil, socks).take("http")
		spec, err := upgrade.ParseSpec(c.spec)
		if err != nil {
			t.Fatal(err)
		}
		l, _, err := restoreListener(o, config.Listen{Spec: spec}, sl, nil, log)
		if err == nil {
			l.Group.Close()
			t.Errorf("%s: restored", c.what)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q, want one line with %q", c.what, err, c.want)
		}
		for _, s := range socks {
			if !isClosed(s.Fd) {
				t.Errorf("%s: fd %d (%+v) left open", c.what, s.Fd, s.Name)
			}
		}
	}
}

// After a restart the sockets systemd passed back are not sent again; a
// selector of the crashed master that was replaced is removed from the
// store (here the group steers with classic BPF, without one).
func TestFdStoreAdopted(t *testing.T) {
	f := newFakeStore(t)
	group := testGroup(t, "b", 1)
	s := newFdStore(hclog.NewNullLogger())
	s.adopted(group, []string{"handoff.e.0.b", "handoff.e.1.b"})
	s.sync([]listener{group})
	if got, want := f.drain(), []string{"FDSTOREREMOVE=1 handoff.e.0.b", "FDSTOREREMOVE=1 handoff.e.1.b"}; !slices.Equal(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
	s.sync([]listener{group})
	if got := f.drain(); len(got) != 0 {
		t.Fatalf("a second sync sent %q", got)
	}
}

// A configuration reload that keeps a listener's name but moves it to
// another address has new sockets under the same names: they replace
// the old ones in the store (which would otherwise keep the old address
// bound, and a crash would bring back the wrong sockets).
func TestFdStoreAddressChange(t *testing.T) {
	f := newFakeStore(t)
	s := newFdStore(hclog.NewNullLogger())
	s.sync([]listener{testGroup(t, "b", 1)})
	if got, want := f.drain(), []string{"FDSTORE=1 handoff.s.0.0.b", "FDSTORE=1 handoff.s.0.1.b"}; !slices.Equal(got, want) {
		t.Fatalf("first sync sent %q, want %q", got, want)
	}
	moved := testGroup(t, "b", 1) // the same name, another port
	s.sync([]listener{moved})
	want := []string{"FDSTORE=1 handoff.s.0.0.b", "FDSTORE=1 handoff.s.0.1.b", "FDSTOREREMOVE=1 handoff.s.0.0.b", "FDSTOREREMOVE=1 handoff.s.0.1.b"}
	if got := f.drain(); !slices.Equal(got, want) {
		t.Fatalf("after the address changed: sent %q, want %q", got, want)
	}
	s.sync([]listener{moved})
	if got := f.drain(); len(got) != 0 {
		t.Fatalf("a second sync sent %q", got)
	}
}

// A unix socket systemd kept whose path is gone (the master that stopped
// cleanly unlinked it) does not fit: nobody could connect to it.
func TestStoredUnixSocketWithoutPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	spec, err := upgrade.ParseSpec("app=unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := checkStoredAddr(spec, int(f.Fd())); err != nil {
		t.Fatalf("with its path: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := checkStoredAddr(spec, int(f.Fd())); err == nil || !strings.Contains(err.Error(), "no path") {
		t.Fatalf("without its path: %v, want an error saying so", err)
	}
}

// The store never holds more than a restarted master can be passed back:
// more descriptors than ActivationSockets takes, or names longer in all
// than one environment string may be, would make every restart fail.
func TestFitsRestart(t *testing.T) {
	many := func(n, nameLen int) map[string]int {
		m := map[string]int{}
		for i := 0; i < n; i++ {
			name := fmt.Sprintf("handoff.s.%d.0.", i)
			m[name+strings.Repeat("x", max(1, nameLen-len(name)))] = i
		}
		return m
	}
	for _, c := range []struct {
		n, nameLen int
		want       bool
	}{
		{4, 20, true},
		{systemd.MaxPassed, 20, true},
		{systemd.MaxPassed + 1, 20, false},
		{2048, 40, true},
		{2048, 80, false}, // 2048 × 81 bytes > 120 KiB
	} {
		if got := fitsRestart(many(c.n, c.nameLen)); got != c.want {
			t.Errorf("%d names of %d bytes: fitsRestart = %v, want %v", c.n, c.nameLen, got, c.want)
		}
	}
}
