//go:build linux

package steer

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// TestRestore: a master crashes while its group steers to bank 1; only
// the copies of its descriptors that systemd's fd store holds remain.
// Connections made meanwhile queue on bank 1, none refused; Restore
// (with the selector's descriptors, or the sockets alone) keeps steering
// there and says so, so the workers started on bank 1 take them.
func TestRestore(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		variants := []string{"sockets"}
		if m == EBPF {
			variants = append(variants, "selector")
		}
		for _, v := range variants {
			t.Run(v, func(t *testing.T) {
				old := newTestGroup(t, "tcp://127.0.0.1:0", 3, ModeSteer, m)
				if err := old.Steer(bank(3, 1)); err != nil {
					t.Fatal(err)
				}
				st, fds := old.Export()
				store := dupAll(t, fds) // systemd's copies
				defer closeFds(store)
				old.Close() // the crash

				// No master: connections wait in the backlogs of the
				// old choice.
				for i := 0; i < 6; i++ {
					dial(t, st.Addr, "")
				}
				waitFor(t, "6 connections queued on bank 1", func() (bool, string) {
					var q []int
					onBank1 := 0
					for i, fd := range store[:6] {
						q = append(q, queueOf(t, fd))
						if i%2 == 1 {
							onBank1 += q[i]
						}
					}
					return onBank1 == 6, fmt.Sprint(q)
				})

				var sel []int
				if v == "selector" {
					sel = dupAll(t, store[6:])
				} else {
					// Not stored: the old selector lives on only
					// while attached to the group.
					closeFds(store[6:])
					store = store[:6]
				}
				spec := st.Spec
				g, err := Restore(spec, Options{Mode: ModeSteer}, dupAll(t, store[:6]), sel)
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				// From the selector, the choice is known exactly; from
				// the queues, a slot where nothing waited may restart
				// on bank 0, where nothing is stranded either.
				active := g.Active()
				if v == "selector" && fmt.Sprint(active) != fmt.Sprint(bank(3, 1)) {
					t.Errorf("Active() = %v, want bank 1 of every slot", active)
				}
				onActive := map[Target]bool{}
				for _, tg := range active {
					onActive[tg] = true
				}
				if g.Slots() != 3 || g.Addr() != st.Addr {
					t.Errorf("restored %d slots on %s, want 3 on %s", g.Slots(), g.Addr(), st.Addr)
				}
				if m == EBPF && g.Mechanism() != EBPF {
					t.Errorf("restored with %s (%v), want eBPF", g.Mechanism(), g.Fallback())
				}
				if want := m == EBPF && v == "selector"; g.AdoptedSelector() != want {
					t.Errorf("AdoptedSelector() = %v, want %v", g.AdoptedSelector(), want)
				}
				got := acceptAll(t, g)
				n := 0
				for tg, peers := range got {
					if tg.Bank != 1 || !onActive[tg] {
						t.Errorf("%d connections waited on %v, which is not steered to (%v)", len(peers), tg, active)
					}
					n += len(peers)
				}
				if n != 6 {
					t.Errorf("accepted %d of the 6 connections made without a master: %v", n, got)
				}
				for tg := range connectAndCount(t, g, 6) {
					if !onActive[tg] {
						t.Errorf("after Restore a connection went to %v, not steered to (%v)", tg, active)
					}
				}
				if err := g.Steer(bank(3, 0)); err != nil {
					t.Fatal(err)
				}
				if got := connectAndCount(t, g, 6); got[Target{0, 0}]+got[Target{1, 0}]+got[Target{2, 0}] != 6 {
					t.Errorf("steered to bank 0: %v", got)
				}
			})
		}
	})
}

// TestRestoreMismatch: sockets on another address than the spec, or too
// few, are refused with one line, and closed.
func TestRestoreMismatch(t *testing.T) {
	old := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, CBPF)
	_, fds := old.Export()
	other, err := upgrade.ParseSpec("t=tcp://127.0.0.2:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		spec  upgrade.Spec
		socks []int
		want  string
	}{
		{other, dupAll(t, fds[:4]), "where t=tcp://127.0.0.2:1 was expected"},
		{old.Spec(), dupAll(t, fds[:3]), "3 sockets"},
		{upgrade.Spec{Name: "t", Network: "udp", Address: "127.0.0.1:0"}, dupAll(t, fds[:4]), "where udp was expected"},
	} {
		g, err := Restore(c.spec, Options{}, c.socks, nil)
		if err == nil {
			g.Close()
			t.Errorf("Restore(%s) of %d sockets: no error", c.spec, len(c.socks))
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Restore(%s): %q, want one line with %q", c.spec, err, c.want)
		}
		for _, fd := range c.socks {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				t.Errorf("Restore(%s) failed and left fd %d open", c.spec, fd)
			}
		}
	}
	// The address of the spec with port 0 matches the restored port.
	any, err := upgrade.ParseSpec("t=tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := Restore(any, Options{Mechanism: CBPF}, dupAll(t, fds[:4]), nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
}
