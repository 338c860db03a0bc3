//go:build linux

package systemd_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// crashWorkers is how many workers the crash test runs.
const crashWorkers = 3

// crashClients is how many clients the strict load runs, each with one
// request in flight at a time.
const crashClients = 4

// strictLoad asks hello over and over from a few clients, each request
// on a new connection and never retried, and counts what happens to
// each: answered, refused (ECONNREFUSED: no socket listened), or failed
// otherwise.
type strictLoad struct {
	quit chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	ok, refused, failed atomic.Int64
	mu                  sync.Mutex
	fails               []loadFail // the first maxFails
}

// loadFail is a request that was not answered.
type loadFail struct {
	start, end time.Time
	err        error
}

const maxFails = 1000

func (f loadFail) String() string {
	return fmt.Sprintf("%s-%s: %v", f.start.Format("15:04:05.000"), f.end.Format("15:04:05.000"), f.err)
}

func startStrictLoad(addr string, clients int) *strictLoad {
	l := &strictLoad{quit: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Long enough for a connection to wait in a backlog
			// while systemd restarts the master.
			c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for {
				select {
				case <-l.quit:
					return
				default:
				}
				start := time.Now()
				_, err := ask(c, addr)
				switch {
				case err == nil:
					l.ok.Add(1)
					continue
				case errors.Is(err, syscall.ECONNREFUSED):
					l.refused.Add(1)
				default:
					l.failed.Add(1)
				}
				l.mu.Lock()
				if len(l.fails) < maxFails {
					l.fails = append(l.fails, loadFail{start: start, end: time.Now(), err: err})
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// waitOK waits until n more requests than before have been answered.
func (l *strictLoad) waitOK(n int64, timeout time.Duration) error {
	want := l.ok.Load() + n
	return poll(timeout, 20*time.Millisecond, nil, func() (bool, string) {
		got := l.ok.Load()
		return got >= want, fmt.Sprintf("%d answered, want %d (refused %d, failed %d)", got, want, l.refused.Load(), l.failed.Load())
	})
}

func (l *strictLoad) stop() {
	l.once.Do(func() { close(l.quit) })
	l.wg.Wait()
}

// runCrash kills the master with SIGKILL under strict load, twice: once
// as started by systemd, once after a master self-upgrade (whose workers
// use the other bank of sockets). systemd restarts it (Restart=always) and
// passes back the listening sockets the master kept in its fd store
// (FileDescriptorStoreMax=): the same sockets listen throughout, no
// connection is refused, and at most the requests in the hands of the
// killed workers fail. The restarted master steers (with mechanism:
// with eBPF, the dead master's selector, kept in the store too), and
// reloads.
func runCrash(t *testing.T, s *service, port int, mechanism string) {
	p := s.start(t)
	master := atoi(p["MainPID"])
	st := s.status(t, "generation 1 steered", func(st handoffStatus) bool {
		return allWorkers(st, 1) && len(st.Workers) == crashWorkers && steered(st, mechanism)
	})
	t.Logf("started: MainPID %d, listeners %+v", master, st.Listeners)
	before, err := listeningInodes(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 2*crashWorkers {
		t.Fatalf("%d sockets listen on port %d, want %d (two banks of %d slots)", len(before), port, 2*crashWorkers, crashWorkers)
	}
	if !holdsAll(s.m.pid, before) {
		t.Errorf("systemd does not hold the listening sockets %v in its fd store", before)
	}
	if _, err := s.waitAnswers(1, "v1"); err != nil {
		t.Fatal(err)
	}

	load := startStrictLoad(s.addr, crashClients)
	defer load.stop()
	if err := load.waitOK(200, 30*time.Second); err != nil {
		t.Fatalf("load before the crash: %v", err)
	}

	// windows are [the master killed, its workers gone] of each crash.
	var windows [][2]time.Time
	// crash kills the master; bank is where its workers took
	// connections, which the restarted master's first generation must
	// use (known exactly from the kept eBPF selector).
	crash := func(what string, wantGen, bank int) {
		t.Helper()
		p, err := s.m.show(s.unit, unitProps...)
		if err != nil {
			t.Fatal(err)
		}
		victim, restarts := atoi(p["MainPID"]), atoi(p["NRestarts"])
		host := s.m.hostPID(victim)
		if host == 0 {
			t.Fatalf("%s: no host pid for MainPID %d", what, victim)
		}
		st := s.status(t, "the workers before the crash", func(st handoffStatus) bool { return len(st.Workers) == crashWorkers })
		var workers []int
		for _, w := range st.Workers {
			if hp := s.m.hostPID(w.PID); hp != 0 {
				workers = append(workers, hp)
			}
		}
		okBefore := load.ok.Load()
		killed := time.Now()
		if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
			t.Fatalf("%s: kill master: %v", what, err)
		}
		// systemd kills the workers once it sees the master die: until
		// then they still take connections, which fail with them.
		if err := poll(30*time.Second, 5*time.Millisecond, nil, func() (bool, string) {
			for _, pid := range workers {
				if unix.Kill(pid, 0) == nil && !zombie(pid) {
					return false, fmt.Sprintf("worker %d still runs", pid)
				}
			}
			return true, ""
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		windows = append(windows, [2]time.Time{killed, time.Now()})
		p, err = s.waitUnit(60*time.Second, "a restarted master serving", func(p map[string]string) bool {
			return active(p) && atoi(p["NRestarts"]) == restarts+1 && atoi(p["MainPID"]) != victim && servingGen(p["StatusText"]) == wantGen
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		st = s.status(t, fmt.Sprintf("generation %d of the restarted master, steered", wantGen), func(st handoffStatus) bool {
			return st.PID == atoi(p["MainPID"]) && allWorkers(st, wantGen) && len(st.Workers) == crashWorkers && steered(st, mechanism)
		})
		if err := load.waitOK(200, 60*time.Second); err != nil {
			t.Fatalf("%s: load after the restart: %v", what, err)
		}
		// The restarted master says how it rebuilt the group: with
		// eBPF, around the selector the dead master left in the store.
		// (By _PID=: journald does not always give a restarted root
		// service's first lines its unit.)
		log, err := s.m.output(20*time.Second, "journalctl", "--no-pager", "-o", "cat", "_PID="+p["MainPID"])
		if err != nil {
			t.Fatal(err)
		}
		restored := ""
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "steered group restored from systemd's fd store") {
				restored = line
			}
		}
		switch {
		case restored == "":
			t.Errorf("%s: the restarted master did not restore the group from the fd store; its log:\n%s", what, log)
		case mechanism == "ebpf" && !strings.Contains(restored, "selector=kept"):
			t.Errorf("%s: restored without the stored selector: %s", what, restored)
		case mechanism == "ebpf" && !strings.Contains(restored, fmt.Sprintf(`active="[{0 %d} {1 %d} {2 %d}]"`, bank, bank, bank)):
			t.Errorf("%s: want the first generation on bank %d of every slot: %s", what, bank, restored)
		}
		t.Logf("%s: %s", what, restored)
		after, err := listeningInodes(port)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(after)
		if !slices.Equal(after, before) {
			t.Errorf("%s: the listening sockets changed from %v to %v: the restarted master did not take systemd's", what, before, after)
		}
		t.Logf("%s: MainPID %d killed, its workers gone %s later; MainPID %d serves generation %d, %s after the kill; %d answered meanwhile, listeners %+v",
			what, victim, windows[len(windows)-1][1].Sub(killed).Round(time.Millisecond), atoi(p["MainPID"]), wantGen, time.Since(killed).Round(time.Millisecond), load.ok.Load()-okBefore, st.Listeners)
	}
	slices.Sort(before)
	crash("crash of the first master", 1, 0)

	// A master upgrade hands the sockets to a new master, whose
	// generation takes bank 1; then that master crashes.
	if err := s.m.install(s.bins.handoffNext, handoffPath); err != nil {
		t.Fatal(err)
	}
	p, _ = s.m.show(s.unit, unitProps...)
	old := atoi(p["MainPID"])
	if err := s.m.systemctl("reload", s.unit); err != nil {
		t.Fatalf("reload (master upgrade): %v", err)
	}
	if _, err := s.waitUnit(60*time.Second, "a new MainPID serving generation 2", func(p map[string]string) bool {
		return active(p) && atoi(p["MainPID"]) != old && servingGen(p["StatusText"]) == 2
	}); err != nil {
		t.Fatalf("master upgrade: %v", err)
	}
	if err := s.m.poll(30*time.Second, func() (bool, string) {
		return s.m.hostPID(old) == 0, fmt.Sprintf("the old master (pid %d) still runs", old)
	}); err != nil {
		t.Fatal(err)
	}
	if err := load.waitOK(100, 30*time.Second); err != nil {
		t.Fatalf("load after the master upgrade: %v", err)
	}
	crash("crash of a master started by an upgrade", 1, 1)

	// The restarted master reloads as usual.
	if err := s.m.install(s.bins.helloV2, helloPath); err != nil {
		t.Fatal(err)
	}
	if err := s.m.systemctl("reload", s.unit); err != nil {
		t.Fatalf("reload after the crash: %v", err)
	}
	if _, err := s.waitUnit(60*time.Second, "gen 2 serving after the restart", servingAt(2)); err != nil {
		t.Fatalf("reload after the crash: %v", err)
	}
	if _, err := s.waitAnswers(2, "v2"); err != nil {
		t.Errorf("after the reload: %v", err)
	}
	load.stop()
	total := load.ok.Load() + load.refused.Load() + load.failed.Load()
	t.Logf("strict load (%d clients, a new connection per request, no retries) over two master crashes: %d requests, %d refused, %d failed",
		crashClients, total, load.refused.Load(), load.failed.Load())
	load.mu.Lock()
	fails := slices.Clone(load.fails)
	load.mu.Unlock()
	var all []string
	for _, f := range fails {
		all = append(all, f.String())
	}
	if load.refused.Load() != 0 {
		t.Errorf("%d connections refused:\n\t%s", load.refused.Load(), strings.Join(all, "\n\t"))
	}
	// A request may fail only if a dying worker had it: sent before
	// the workers were gone, and ended after the master was killed.
	// Every request made after that waited for the new master.
	for _, f := range fails {
		inFlight := false
		for _, w := range windows {
			inFlight = inFlight || f.start.Before(w[1]) && !f.end.Before(w[0])
		}
		if !inFlight {
			t.Errorf("a request failed that no dying worker had (crashes, from kill to workers gone: %v): %s", windows, f)
		}
	}
	if len(fails) > 0 {
		t.Logf("failed requests (in flight on the dying workers):\n\t%s", strings.Join(all, "\n\t"))
	}
}

// steered says whether every listener is a kernel-steered group using
// mechanism.
func steered(st handoffStatus, mechanism string) bool {
	if len(st.Listeners) == 0 {
		return false
	}
	for _, l := range st.Listeners {
		if l.Balance != "steer" || l.Mechanism != mechanism {
			return false
		}
	}
	return true
}

// zombie tells whether host process pid has exited but is not reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// holdsAll tells whether host process pid has every socket inode open.
func holdsAll(pid int, inodes []string) bool {
	for _, in := range inodes {
		if !holdsSocket(pid, in) {
			return false
		}
	}
	return true
}
