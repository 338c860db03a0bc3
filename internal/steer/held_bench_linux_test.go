//go:build linux

package steer

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// BenchmarkSelector measures the CPU time of the SK_REUSEPORT program per
// selection (one per SYN) and of the tracepoint program per TCP state
// change it sees, from the kernel's BPF statistics (run time / run
// count), for a group with every slot active. "idle": every socket holds
// nothing, so the least-held scan stops at its first socket; "busy":
// every socket is made to hold one connection (written into the map), so
// the scan visits all of them: the worst case.
//
//	go test -run '^$' -bench BenchmarkSelector -benchtime 4000x ./steer/
func BenchmarkSelector(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("eBPF needs root")
	}
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Skipf("BPF statistics: %v", err)
	}
	defer stats.Close()
	for _, slots := range []int{4, 64, MaxSlots} {
		for _, busy := range []bool{false, true} {
			name := fmt.Sprintf("slots=%d/idle", slots)
			if busy {
				name = fmt.Sprintf("slots=%d/busy", slots)
			}
			b.Run(name, func(b *testing.B) { benchSelector(b, slots, busy) })
		}
	}
}

func benchSelector(b *testing.B, slots int, busy bool) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < uint64(2*slots+64) {
		b.Skipf("the open-file limit %d is too low for %d slots", lim.Cur, slots)
	}
	spec, _ := upgrade.ParseSpec("t=tcp://127.0.0.1:0")
	g, err := New(spec, Options{Slots: slots, Mechanism: EBPF})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	if busy {
		v := make([]byte, 8*socketArraySize)
		for k := 0; k < socketArraySize; k++ {
			binary.NativeEndian.PutUint64(v[8*k:], 1)
		}
		if err := g.ebpf.held.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
			b.Fatal(err)
		}
	}
	drain := func() {
		for s := 0; s < slots; s++ {
			fd := g.Fd(0, s)
			for {
				p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				if n, _ := unix.Poll(p, 0); n == 0 {
					break
				}
				c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
				if err != nil {
					break
				}
				unix.Close(c)
			}
		}
	}
	progStats := func(p *ebpf.Program) (time.Duration, uint64) {
		if p == nil {
			return 0, 0
		}
		s, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return s.Runtime, s.RunCount
	}
	var tracerProg *ebpf.Program
	if g.ebpf.tracer != nil {
		tracerProg = g.ebpf.tracer.prog
	}
	t0, n0 := progStats(g.ebpf.prog)
	u0, m0 := progStats(tracerProg)
	for b.Loop() {
		c, err := net.Dial("tcp", g.Addr())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		// Accept and close at once: a connection its client closed
		// is held until the server's side closes it too, so "idle"
		// stays idle.
		drain()
	}
	drain()
	t1, n1 := progStats(g.ebpf.prog)
	u1, m1 := progStats(tracerProg)
	if n1 > n0 {
		b.ReportMetric(float64(t1-t0)/float64(n1-n0), "ns/select")
	}
	if m1 > m0 {
		b.ReportMetric(float64(u1-u0)/float64(m1-m0), "ns/trace")
	}
}
