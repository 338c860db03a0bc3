//go:build linux

package steer

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"

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
