package workers

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// The supervisor's tests run on simulated processes: each is a goroutine
// that behaves as the test says and speaks to the worker's real notify
// socket. They exercise every supervision rule in-process and fast; the
// end-to-end tests at the repository root run the same rules with real
// processes.

// behaviour is how a simulated worker acts.
type behaviour struct {
	readyAfter time.Duration   // when it sends READY=1
	never      bool            // never sends READY=1
	gate       <-chan struct{} // if set, READY=1 only once it is closed
	exitCode   int             // its exit status when it exits on its own
	exitAt     time.Duration   // > 0: exits on its own this long after start (or after ready, with afterReady)
	afterReady bool
	ignoreStop bool          // the stop signal does nothing
	stopTakes  time.Duration // how long it drains after the stop signal
	leftover   bool          // leaves a process behind that only SIGKILL removes
}

// fakeStarter starts simulated workers. behave decides each one's
// behaviour from its generation and slot.
type fakeStarter struct {
	behave func(gen, slot int) behaviour

	mu      sync.Mutex
	nextPID int
	procs   []*fakeProc
	log     []string // "start g1 s0", "signal g1 s0 SIGTERM", "exit g1 s0 ..."
	at      []time.Time
}

func (f *fakeStarter) close() {}

func (f *fakeStarter) record(format string, args ...any) {
	f.mu.Lock()
	f.log = append(f.log, fmt.Sprintf(format, args...))
	f.at = append(f.at, time.Now())
	f.mu.Unlock()
}

func (f *fakeStarter) events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// times returns when each event starting with prefix happened.
func (f *fakeStarter) times(prefix string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for i, e := range f.log {
		if strings.HasPrefix(e, prefix) {
			out = append(out, f.at[i])
		}
	}
	return out
}

func envOf(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func (f *fakeStarter) start(spec procSpec) (process, error) {
	gen, _ := strconv.Atoi(envOf(spec.env, "HANDOFF_GENERATION"))
	slot, _ := strconv.Atoi(envOf(spec.env, "HANDOFF_WORKER"))
	f.mu.Lock()
	f.nextPID++
	p := &fakeProc{
		id:     100000 + f.nextPID,
		gen:    gen,
		slot:   slot,
		f:      f,
		b:      f.behave(gen, slot),
		notify: envOf(spec.env, "NOTIFY_SOCKET"),
		sigs:   make(chan syscall.Signal, 16),
		exit:   make(chan exitInfo, 1),
		done:   make(chan struct{}),
	}
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	f.record("start g%d s%d", gen, slot)
	go p.run()
	return p, nil
}

// fakeProc is one simulated worker process.
type fakeProc struct {
	id, gen, slot int
	f             *fakeStarter
	b             behaviour
	notify        string
	sigs          chan syscall.Signal
	exit          chan exitInfo
	done          chan struct{} // closed when the main "process" ended

	mu        sync.Mutex
	over      bool
	leftAlive bool // the simulated leftover process
}

func (p *fakeProc) pid() int                { return p.id }
func (p *fakeProc) exited() <-chan exitInfo { return p.exit }
func (p *fakeProc) release()                {}
func (p *fakeProc) pids() []int             { return nil }
func (p *fakeProc) owns(pid int) bool       { return pid == os.Getpid() } // it speaks from the test's process

func (p *fakeProc) treeEmpty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.leftAlive
}

func (p *fakeProc) signal(sig syscall.Signal) error {
	p.f.record("signal g%d s%d %s", p.gen, p.slot, unix.SignalName(sig))
	p.mu.Lock()
	if sig == unix.SIGKILL {
		p.leftAlive = false
	}
	over := p.over
	p.mu.Unlock()
	if !over {
		select {
		case p.sigs <- sig:
		default:
		}
	}
	return nil
}

// kill simulates a kill from outside (the OOM killer, kill -9).
func (p *fakeProc) kill() { p.signal(unix.SIGKILL) }

func (p *fakeProc) end(e exitInfo) {
	p.mu.Lock()
	p.over = true
	p.leftAlive = p.b.leftover && e != killedBy(unix.SIGKILL)
	p.mu.Unlock()
	p.f.record("exit g%d s%d %s", p.gen, p.slot, e)
	close(p.done)
	p.exit <- e
}

func (p *fakeProc) run() {
	b := p.b
	var ready, own, stopped <-chan time.Time
	if !b.never && b.gate == nil {
		ready = time.After(b.readyAfter)
	}
	gate := b.gate
	if b.exitAt > 0 && !b.afterReady {
		own = time.After(b.exitAt)
	}
	for {
		select {
		case <-gate:
			gate = nil
			ready = time.After(0)
		case <-ready:
			ready = nil
			p.f.record("ready g%d s%d", p.gen, p.slot) // before the supervisor can know
			p.send("READY=1")
			if b.exitAt > 0 && b.afterReady {
				own = time.After(b.exitAt)
			}
		case <-own:
			p.end(exitedWith(b.exitCode))
			return
		case <-stopped:
			p.end(exitedWith(0))
			return
		case sig := <-p.sigs:
			switch {
			case sig == unix.SIGKILL:
				p.end(killedBy(unix.SIGKILL))
				return
			case !b.ignoreStop && stopped == nil:
				stopped = time.After(b.stopTakes)
			}
		}
	}
}

func (p *fakeProc) send(msg string) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: p.notify, Net: "unixgram"})
	if err != nil {
		return
	}
	c.Write([]byte(msg))
	c.Close()
}

// testSup is a supervisor on simulated processes, running.
type testSup struct {
	t      *testing.T
	s      *Supervisor
	f      *fakeStarter
	cancel context.CancelFunc
	done   chan error

	mu  sync.Mutex
	evs []Event
}

// fastConfig is a Config with the timings shortened for tests.
func fastConfig(n int) Config {
	return Config{
		Command:      []string{"/bin/true"},
		Workers:      n,
		ReadyTimeout: 5 * time.Second,
		DrainTimeout: 5 * time.Second,
		MinUptime:    100 * time.Millisecond,
	}
}

// runSup starts a supervisor with cfg on simulated workers; prep, if
// given, adjusts it before it runs.
func runSup(t *testing.T, cfg Config, behave func(gen, slot int) behaviour, prep ...func(*testSup)) *testSup {
	t.Helper()
	dir, err := os.MkdirTemp("", "hw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.RuntimeDir = dir
	ts := &testSup{t: t, f: &fakeStarter{behave: behave}, done: make(chan error, 1)}
	cfg.OnEvent = ts.record
	if testing.Verbose() {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr})
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.mkStart = func() starter { return ts.f }
	ts.s = s
	for _, p := range prep {
		p(ts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		s.Kill()
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after stop")
		}
	})
	return ts
}

func (ts *testSup) record(e Event) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.evs = append(ts.evs, e)
}

func (ts *testSup) events(kind EventKind) []Event {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []Event
	for _, e := range ts.evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls the status until ok accepts it.
func (ts *testSup) waitFor(what string, ok func(Status) bool) Status {
	ts.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var st Status
	for time.Now().Before(deadline) {
		st = ts.s.Status()
		if ok(st) {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	ts.t.Fatalf("timed out waiting for %s; status %+v", what, st)
	return st
}

// waitServing waits until generation gen serves with n ready workers and
// nothing else runs.
func (ts *testSup) waitServing(gen, n int) Status {
	ts.t.Helper()
	return ts.waitFor(fmt.Sprintf("generation %d serving with %d ready workers", gen, n), func(st Status) bool {
		return st.Serving && st.Generation == gen && st.Rollover == nil && len(st.Workers) == n && countState(st, gen, Ready) == n
	})
}

func countState(st Status, gen int, s State) int {
	n := 0
	for _, w := range st.Workers {
		if w.Generation == gen && w.State == s {
			n++
		}
	}
	return n
}

func (ts *testSup) reload() ReloadResult {
	ts.t.Helper()
	select {
	case r := <-ts.s.Reload(ReloadRequest{}):
		return r
	case <-time.After(30 * time.Second):
		ts.t.Fatal("reload did not finish within 30s")
	}
	return ReloadResult{}
}

// proc returns the simulated process that is worker gen/slot's latest.
func (ts *testSup) proc(gen, slot int) *fakeProc {
	ts.f.mu.Lock()
	defer ts.f.mu.Unlock()
	for i := len(ts.f.procs) - 1; i >= 0; i-- {
		if p := ts.f.procs[i]; p.gen == gen && p.slot == slot {
			return p
		}
	}
	ts.t.Fatalf("no process for generation %d slot %d", gen, slot)
	return nil
}

// procByPID returns the simulated process with pid.
func (ts *testSup) procByPID(pid int) *fakeProc {
	ts.f.mu.Lock()
	defer ts.f.mu.Unlock()
	for _, p := range ts.f.procs {
		if p.id == pid {
			return p
		}
	}
	ts.t.Fatalf("no process with pid %d", pid)
	return nil
}

func pids(st Status, gen int) map[int]int {
	m := map[int]int{}
	for _, w := range st.Workers {
		if w.Generation == gen {
			m[w.Slot] = w.PID
		}
	}
	return m
}

func good(gen, slot int) behaviour { return behaviour{readyAfter: 5 * time.Millisecond} }
