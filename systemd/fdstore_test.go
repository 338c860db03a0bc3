package systemd

import (
	"strings"
	"testing"
)

func TestStoreNameRoundTrip(t *testing.T) {
	for _, c := range []struct {
		n    StoreName
		want string
	}{
		{StoreName{Kind: KindShared, Listener: "http"}, "handoff.l.http"},
		{StoreName{Kind: KindMember, Listener: "http", Slot: 3, Bank: 1}, "handoff.s.3.1.http"},
		{StoreName{Kind: KindMember, Listener: "a.1.0", Slot: 0, Bank: 0}, "handoff.s.0.0.a.1.0"},
		{StoreName{Kind: KindSelector, Listener: "dns/udp", Index: 7}, "handoff.e.7.dns/udp"},
		{StoreName{Kind: KindShared, Listener: strings.Repeat("x", 255-len("handoff.l."))}, "handoff.l." + strings.Repeat("x", 245)},
	} {
		got, err := c.n.FDName()
		if err != nil || got != c.want {
			t.Errorf("%+v.FDName() = %q, %v; want %q", c.n, got, err, c.want)
			continue
		}
		back, ours, err := ParseStoreName(got)
		if err != nil || !ours || back != c.n {
			t.Errorf("ParseStoreName(%q) = %+v, %v, %v; want %+v", got, back, ours, err, c.n)
		}
	}
}

func TestStoreNameRefused(t *testing.T) {
	for _, n := range []StoreName{
		{Kind: KindShared, Listener: ""},
		{Kind: KindShared, Listener: "a:b"},
		{Kind: KindShared, Listener: "a b"},
		{Kind: KindShared, Listener: "é"},
		{Kind: KindShared, Listener: strings.Repeat("x", 246)},
		{Kind: KindMember, Listener: "http", Bank: 2},
		{Kind: KindMember, Listener: "http", Slot: -1},
		{Kind: KindSelector, Listener: "http", Index: -1},
		{Kind: 'x', Listener: "http"},
	} {
		if s, err := n.FDName(); err == nil {
			t.Errorf("%+v.FDName() = %q, want an error", n, s)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v.FDName(): error of several lines: %q", n, err)
		}
	}
}

func TestParseStoreName(t *testing.T) {
	for _, s := range []string{"http", "unknown", "stored", "handoff", "handoffx.l.http", ""} {
		if _, ours, err := ParseStoreName(s); ours || err != nil {
			t.Errorf("ParseStoreName(%q): ours %v, %v; want it not handoff's", s, ours, err)
		}
	}
	for _, s := range []string{
		"handoff.", "handoff.l", "handoff.l.", "handoff.x.http", "handoff.lhttp",
		"handoff.s.1.http", "handoff.s.1.2.http", "handoff.s.01.0.http", "handoff.s.+1.0.http",
		"handoff.s.-1.0.http", "handoff.s.1.0.", "handoff.s.65536.0.http", "handoff.e..http",
		"handoff.e.1", "handoff.l.a b", "handoff.l." + strings.Repeat("x", 246),
	} {
		if n, ours, err := ParseStoreName(s); !ours || err == nil {
			t.Errorf("ParseStoreName(%q) = %+v, ours %v, %v; want an error", s, n, ours, err)
		}
	}
}

func TestSplitStored(t *testing.T) {
	socks := []Socket{
		{Name: "http", Fd: 3},
		{Name: "handoff.s.0.1.http", Fd: 4},
		{Name: "handoff.s.x.1.http", Fd: 5},
		{Name: "handoff.l.admin", Fd: 6},
		{Name: "unknown", Fd: 7},
	}
	stored, activated, bad := SplitStored(socks)
	want := []StoredSocket{
		{Name: StoreName{Kind: KindMember, Listener: "http", Slot: 0, Bank: 1}, Fd: 4},
		{Name: StoreName{Kind: KindShared, Listener: "admin"}, Fd: 6},
	}
	if len(stored) != 2 || stored[0] != want[0] || stored[1] != want[1] {
		t.Errorf("stored = %+v, want %+v", stored, want)
	}
	if len(activated) != 2 || activated[0].Fd != 3 || activated[1].Fd != 7 {
		t.Errorf("activated = %+v, want fds 3 and 7", activated)
	}
	if len(bad) != 1 || bad[0].Fd != 5 {
		t.Errorf("bad = %+v, want fd 5", bad)
	}
}

func TestFdStoreMax(t *testing.T) {
	for _, c := range []struct {
		env  string
		n    int
		know bool
	}{{"", 0, false}, {"64", 64, true}, {"x", 0, false}, {"-1", 0, false}} {
		t.Setenv("FDSTORE", c.env)
		if n, ok := Max(); n != c.n || ok != c.know {
			t.Errorf("FDSTORE=%q: Max() = %d, %v; want %d, %v", c.env, n, ok, c.n, c.know)
		}
	}
}

func TestNewFdStoreWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if s := NewFdStore(); s != nil {
		t.Fatalf("NewFdStore() without NOTIFY_SOCKET = %+v, want nil", s)
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := NewFdStore().Remove("handoff.l.http"); err == nil || !strings.Contains(err.Error(), "not a unix socket path") {
		t.Fatalf("Remove with NOTIFY_SOCKET=relative/path: %v", err)
	}
}

func FuzzParseStoreName(f *testing.F) {
	for _, s := range []string{
		"handoff.l.http", "handoff.s.3.1.http", "handoff.e.7.x", "handoff.s.01.0.a",
		"handoff.s.1.2.a", "handoff.l.a:b", "http", "handoff.", "handoff.s.65535.1.a.b.c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ours, err := ParseStoreName(s)
		if !ours {
			if err != nil || strings.HasPrefix(s, storePrefix) {
				t.Fatalf("ParseStoreName(%q): not ours, %v", s, err)
			}
			return
		}
		if err != nil {
			if strings.Contains(err.Error(), "\n") || len(err.Error()) > 200 {
				t.Fatalf("ParseStoreName(%q): error %q", s, err)
			}
			return
		}
		// What parses is exactly what FDName writes.
		back, err := n.FDName()
		if err != nil || back != s {
			t.Fatalf("ParseStoreName(%q) = %+v, whose FDName is %q, %v", s, n, back, err)
		}
	})
}
