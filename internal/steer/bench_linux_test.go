//go:build linux

package steer

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// BenchmarkAccept measures connections per second (connect, accept,
// close) on loopback with 4 acceptors: all on one shared socket, or each
// on its own socket of a steered group.
func BenchmarkAccept(b *testing.B) {
	const workers = 4
	run := func(b *testing.B, addr string, fds []int) {
		var (
			accepted atomic.Int64
			done     atomic.Bool
			wg       sync.WaitGroup
		)
		for _, fd := range fds {
			// Non-blocking, so that no acceptor is left blocked in
			// accept when another took the last connection.
			if err := unix.SetNonblock(fd, true); err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !done.Load() {
					p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
					if n, _ := unix.Poll(p, 20); n == 0 {
						continue
					}
					c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
					if err != nil {
						continue
					}
					unix.Close(c)
					accepted.Add(1)
				}
			}()
		}
		b.ResetTimer()
		var dials sync.WaitGroup
		per := b.N / workers
		for i := 0; i < workers; i++ {
			n := per
			if i == 0 {
				n += b.N % workers
			}
			dials.Add(1)
			go func() {
				defer dials.Done()
				for j := 0; j < n; j++ {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					c.Close()
				}
			}()
		}
		dials.Wait()
		for accepted.Load() < int64(b.N) && !b.Failed() {
			_, _ = unix.Poll(nil, 1)
		}
		b.StopTimer()
		done.Store(true)
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
	}
	b.Run("shared", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		run(b, l.Addr().String(), []int{fd, fd, fd, fd})
	})
	for _, m := range []Mechanism{EBPF, CBPF} {
		b.Run(string(m), func(b *testing.B) {
			if m == EBPF && os.Geteuid() != 0 {
				b.Skip("eBPF needs root")
			}
			spec, _ := upgrade.ParseSpec("t=tcp://127.0.0.1:0")
			g, err := New(spec, Options{Slots: workers, Mechanism: m})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			var fds []int
			for s := 0; s < workers; s++ {
				fds = append(fds, g.Fd(0, s))
			}
			run(b, g.Addr(), fds)
		})
	}
}

// BenchmarkDial measures one probe (Dial, close) to an inactive socket,
// against a plain connection to the group's address (steered normally):
// with eBPF a probe is two map updates; with classic BPF two program
// swaps, whose cost grows with the program (1024 slots with alternating
// active banks is the largest).
func BenchmarkDial(b *testing.B) {
	drain := func(fd int) {
		for {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, _ := unix.Poll(p, 0); n == 0 {
				return
			}
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			unix.Close(c)
		}
	}
	cases := []struct {
		name  string
		m     Mechanism
		slots int
		plain bool
	}{
		{"plain-ebpf", EBPF, 4, true},
		{"ebpf", EBPF, 4, false},
		{"cbpf", CBPF, 4, false},
		{"cbpf-1024-slots", CBPF, MaxSlots, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if c.m == EBPF && os.Geteuid() != 0 {
				b.Skip("eBPF needs root")
			}
			var lim unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < uint64(2*c.slots+64) {
				b.Skipf("the open-file limit %d is too low for %d slots", lim.Cur, c.slots)
			}
			spec, _ := upgrade.ParseSpec("t=tcp://127.0.0.1:0")
			g, err := New(spec, Options{Slots: c.slots, Mechanism: c.m})
			if err != nil {
				b.Fatal(err)
			}
			defer g.Close()
			var active []Target
			for s := 0; s < c.slots; s++ {
				active = append(active, Target{Slot: s, Bank: s % 2})
			}
			if err := g.Steer(active); err != nil {
				b.Fatal(err)
			}
			target := Target{Slot: 0, Bank: 1} // inactive
			ctx := context.Background()
			var r0, r1 unix.Rusage
			var drained int64 // CPU time spent accepting, not dialing
			_ = unix.Getrusage(unix.RUSAGE_SELF, &r0)
			for i := 0; b.Loop(); i++ {
				var conn net.Conn
				if c.plain {
					conn, err = net.Dial("tcp", g.Addr())
				} else {
					conn, err = g.Dial(ctx, target.Bank, target.Slot)
				}
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
				if i%256 == 255 {
					b.StopTimer()
					var d0, d1 unix.Rusage
					_ = unix.Getrusage(unix.RUSAGE_SELF, &d0)
					for _, tg := range []Target{target, {0, 0}, {1, 1}, {2, 0}, {3, 1}} {
						drain(g.Fd(tg.Bank, tg.Slot))
					}
					_ = unix.Getrusage(unix.RUSAGE_SELF, &d1)
					drained += d1.Utime.Nano() - d0.Utime.Nano() + d1.Stime.Nano() - d0.Stime.Nano()
					b.StartTimer()
				}
			}
			_ = unix.Getrusage(unix.RUSAGE_SELF, &r1)
			cpu := time.Duration(r1.Utime.Nano()-r0.Utime.Nano()+r1.Stime.Nano()-r0.Stime.Nano()-drained) * time.Nanosecond
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/dial")
			// Wall time on a busy machine is mostly waiting for a CPU;
			// the process's CPU time (user and system, including the
			// loopback packets it processes) is the better measure.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/dial")
		})
	}
}
