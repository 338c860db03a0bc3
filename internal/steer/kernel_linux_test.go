//go:build linux

package steer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// TestDetachReorders shows why a group never closes a member: when one
// leaves the group (close, or shutdown by any process sharing it), the
// kernel moves the last member into its place (reuseport_detach_sock),
// so a classic program's index now names another socket. QueueLen
// reports a member that left.
func TestDetachReorders(t *testing.T) {
	for _, how := range []string{"close", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, CBPF)
			// Group order: s0/b0, s0/b1, s1/b0, s1/b1. Steer to s0/b1.
			if err := g.Steer([]Target{{0, 1}}); err != nil {
				t.Fatal(err)
			}
			g.mu.Lock()
			fd := g.fds[index(Target{0, 1})]
			if how == "close" {
				unix.Close(fd)
				g.fds[index(Target{0, 1})] = -1
			} else if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
				g.mu.Unlock()
				t.Fatal(err)
			}
			g.mu.Unlock()
			if how == "shutdown" {
				if _, err := g.QueueLen(1, 0); err == nil || !strings.Contains(err.Error(), "no longer listening") {
					t.Errorf("QueueLen of a shut down member: %v", err)
				}
			}
			// Index 1 now holds the former last member, s1/b1.
			addr := g.Addr()
			for i := 0; i < 3; i++ {
				dial(t, addr, "")
			}
			waitFor(t, "3 connections on slot 1 bank 1", func() (bool, string) {
				n, err := g.QueueLen(1, 1)
				if err != nil {
					t.Fatal(err)
				}
				return n == 3, fmt.Sprintf("%d queued there", n)
			})
		})
	}
}

// TestBadInput: each mistake is one precise error and leaves no
// descriptor behind.
func TestBadInput(t *testing.T) {
	before := openFds(t)
	spec := func(s string) upgrade.Spec {
		sp, err := upgrade.ParseSpec("t=" + s)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	busy, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(busy, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(busy, 1); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(busy)
	busyAddr := sockaddrString(sa)
	cases := []struct {
		spec        upgrade.Spec
		opts        Options
		want        string
		unsupported bool
	}{
		{spec("unix:///tmp/x.sock"), Options{Slots: 2}, "unix sockets have no SO_REUSEPORT groups", true},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 0}, "0 slots (want 1 to 1024)", false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: MaxSlots + 1}, "1025 slots", false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 1, Mode: "fastest"}, `unknown steering mode "fastest"`, false},
		{spec("tcp://127.0.0.1:0"), Options{Slots: 1, Mechanism: "xdp"}, `unknown mechanism "xdp"`, false},
		{spec("tcp://" + busyAddr), Options{Slots: 2}, "address " + busyAddr + " is already in use", false},
		{spec("tcp4://no-such-host.invalid:80"), Options{Slots: 1}, `resolve "no-such-host.invalid"`, false},
	}
	for _, c := range cases {
		g, err := New(c.spec, c.opts)
		if err == nil {
			g.Close()
			t.Errorf("%s %+v: no error", c.spec, c.opts)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %+v: %q, want one line with %q", c.spec, c.opts, err, c.want)
		}
		if errors.Is(err, ErrUnsupported) != c.unsupported {
			t.Errorf("%s: ErrUnsupported is %v, want %v", c.spec, errors.Is(err, ErrUnsupported), c.unsupported)
		}
	}
	unix.Close(busy)

	g := newTestGroup(t, "tcp://127.0.0.1:0", 2, ModeSteer, CBPF)
	for _, c := range []struct {
		active []Target
		want   string
	}{
		{[]Target{{2, 0}}, "slot 2 out of range (the group has 2 slots)"},
		{[]Target{{-1, 0}}, "slot -1 out of range"},
		{[]Target{{0, 2}}, "slot 0: bank 2 (want 0 or 1)"},
		{[]Target{{1, 0}, {1, 1}}, "slot 1 named twice"},
	} {
		if err := g.Steer(c.active); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Steer(%v): %v, want %q", c.active, err, c.want)
		}
	}
	if g.Fd(2, 0) != -1 || g.Fd(0, 2) != -1 || g.Fd(-1, 0) != -1 {
		t.Error("Fd out of range is not -1")
	}
	g.Close()
	if err := g.Steer(bank(2, 0)); err == nil {
		t.Error("Steer after Close: no error")
	}
	if g.Fd(0, 0) != -1 {
		t.Error("Fd after Close is not -1")
	}
	if after := openFds(t); after != before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
}

// TestCloseLeavesNothing: a group of every kind closes all its
// descriptors (sockets, program, maps).
func TestCloseLeavesNothing(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		before := openFds(t)
		for _, l := range []string{"tcp://127.0.0.1:0", "udp://127.0.0.1:0"} {
			for _, mode := range []Mode{ModeSteer, ModeSticky} {
				sp, _ := upgrade.ParseSpec("t=" + l)
				g, err := New(sp, Options{Slots: 3, Mode: mode, Mechanism: m})
				if err != nil {
					t.Fatal(err)
				}
				if err := g.Grow(5); err != nil {
					t.Fatal(err)
				}
				g.Close()
				g.Close()
			}
		}
		if after := openFds(t); after != before {
			t.Errorf("%d descriptors open before, %d after", before, after)
		}
	})
}

func openFds(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && !strings.HasPrefix(l, "/proc") {
			n++
		}
	}
	return n
}

// TestKernelTCPHeaderAtData verifies what a BPF_PROG_TYPE_SK_REUSEPORT
// program sees when the kernel picks a listener for a SYN, which is what
// targeted probes rely on: skb->data (where bpf_skb_load_bytes offsets
// start) points at the TCP header, for IPv4 and IPv6, so offset 0 is
// the source port. A test program copies the first 20 bytes, md->len,
// eth_protocol and ip_protocol into a map; the test compares them with
// the connection it made.
func TestKernelTCPHeaderAtData(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("eBPF needs root")
	}
	cases := []struct{ name, loopback string }{{"ipv4", "127.0.0.1"}}
	if hasIPv6(t) {
		cases = append(cases, struct{ name, loopback string }{"ipv6", "::1"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 40, MaxEntries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer seen.Close()
			const fp = asm.RFP
			var p asm.Instructions
			p = append(p, asm.Mov.Reg(asm.R6, asm.R1))
			for o := int16(-48); o < 0; o += 4 {
				p = append(p, asm.StoreImm(fp, o, 0, asm.Word))
			}
			p = append(p,
				asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0),
				asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, -48), asm.Mov.Imm(asm.R4, 20),
				asm.FnSkbLoadBytes.Call(),
				asm.StoreMem(fp, -28, asm.R0, asm.Word),
				asm.LoadMem(asm.R1, asm.R6, 16, asm.Word), asm.StoreMem(fp, -24, asm.R1, asm.Word), // len
				asm.LoadMem(asm.R1, asm.R6, 20, asm.Word), asm.StoreMem(fp, -20, asm.R1, asm.Word), // eth_protocol
				asm.LoadMem(asm.R1, asm.R6, 24, asm.Word), asm.StoreMem(fp, -16, asm.R1, asm.Word), // ip_protocol
				asm.LoadMapPtr(asm.R1, seen.FD()),
				asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, -4),
				asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, -48),
				asm.Mov.Imm(asm.R4, 0),
				asm.FnMapUpdateElem.Call(),
				asm.Mov.Imm(asm.R0, skPass),
				asm.Return(),
			)
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Type: ebpf.SkReuseport, AttachType: ebpf.AttachSkReuseportSelect, Instructions: p,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
			if c.name == "ipv6" {
				family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
			}
			fd, err := newSocket(family, unix.SOCK_STREAM, 1, sa)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD()); err != nil {
				t.Fatal(err)
			}
			lsa, _ := unix.Getsockname(fd)
			conn := dial(t, sockaddrString(lsa), c.loopback)
			local := conn.LocalAddr().(*net.TCPAddr)
			remote := conn.RemoteAddr().(*net.TCPAddr)
			var v [40]byte
			waitFor(t, "the program to record a SYN", func() (bool, string) {
				if err := seen.Lookup(uint32(0), &v); err != nil {
					t.Fatal(err)
				}
				return v[32] != 0, "nothing recorded"
			})
			ne := binary.NativeEndian
			rc, length := int32(ne.Uint32(v[20:])), ne.Uint32(v[24:])
			sport, dport := binary.BigEndian.Uint16(v[0:]), binary.BigEndian.Uint16(v[2:])
			doff := int(v[12]>>4) * 4
			flags := v[13]
			t.Logf("%s: load_bytes(0, 20) = %d; source port %d, destination port %d, data offset %d, flags %#x; md->len %d, eth_protocol %#x, ip_protocol %d",
				c.name, rc, sport, dport, doff, flags, length, ne.Uint32(v[28:]), ne.Uint32(v[32:]))
			if rc != 0 {
				t.Fatalf("bpf_skb_load_bytes at offset 0 failed: %d", rc)
			}
			if int(sport) != local.Port || int(dport) != remote.Port {
				t.Errorf("offset 0 holds ports %d → %d, the connection is %d → %d: skb->data is not at the TCP header", sport, dport, local.Port, remote.Port)
			}
			if flags&0x12 != 0x02 {
				t.Errorf("flags %#x: not a SYN", flags)
			}
			if int(length) != doff {
				t.Errorf("md->len %d, TCP header length %d: the SYN should carry no payload past the header", length, doff)
			}
			if ne.Uint32(v[32:]) != unix.IPPROTO_TCP {
				t.Errorf("ip_protocol %d", ne.Uint32(v[32:]))
			}
		})
	}
}
