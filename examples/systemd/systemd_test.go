//go:build linux

// Package systemd_test runs the example units of this directory under a
// real systemd: pid 1 of a private namespace on this machine, sharing its
// network. It needs root, unshare, nsenter, systemd and a writable cgroup2
// hierarchy, and skips, saying which is missing, without them.
package systemd_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// exampleAddr is where the example units listen; the test moves them to a
// free port.
const exampleAddr = "127.0.0.1:8080"

// Where the example units expect the binaries, relative to a machine's
// directory (bin/ is mounted on /usr/local/bin, opt/ on /opt).
const (
	handoffPath = "bin/handoff"
	helloPath   = "opt/hello/hello"
)

// brokenHello is an app release that dies before it is ready.
const brokenHello = "#!/bin/sh\necho 'hello: broken release' >&2\nexit 1\n"

func TestSystemd(t *testing.T) {
	h := checkHost(t)
	// Not under /tmp: keep the machines' files apart from what a unit's
	// PrivateTmp= or a tmpfs on /tmp would hide.
	const workDir, workPrefix = "/var/tmp", "handoff-systemd-test-"
	sweep(workDir, workPrefix, os.RemoveAll)
	work, err := os.MkdirTemp(workDir, fmt.Sprintf("%s%d-", workPrefix, os.Getpid()))
	if err != nil {
		t.Fatalf("work directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(work); err != nil {
			t.Errorf("remove %s: %v", work, err)
		}
	})
	bins := build(t, filepath.Join(work, "build"))

	t.Run("notify", func(t *testing.T) {
		addr, _ := freeAddr(t)
		m := boot(t, h, filepath.Join(work, "notify"), map[string]string{
			"handoff.service":             exampleUnit(t, "handoff.service", addr),
			"handoff.service.d/test.conf": testDropIn,
		}, bins.installed())
		runReloads(t, &service{m: m, unit: "handoff.service", addr: addr, bins: bins})
	})

	t.Run("watchdog", func(t *testing.T) {
		addr, _ := freeAddr(t)
		m := boot(t, h, filepath.Join(work, "watchdog"), map[string]string{
			"handoff.service":             exampleUnit(t, "handoff.service", addr),
			"handoff.service.d/test.conf": testDropIn + "[Service]\nWatchdogSec=2s\n",
		}, bins.installed())
		runWatchdog(t, &service{m: m, unit: "handoff.service", addr: addr, bins: bins})
	})

	t.Run("crash", func(t *testing.T) {
		addr, port := freeAddr(t)
		unit := exampleUnit(t, "handoff.service", addr)
		if !strings.Contains(unit, "--workers auto") {
			t.Fatal("handoff.service does not run --workers auto")
		}
		unit = strings.Replace(unit, "--workers auto", fmt.Sprintf("--workers %d", crashWorkers), 1)
		m := boot(t, h, filepath.Join(work, "crash"), map[string]string{
			"handoff.service":             unit,
			"handoff.service.d/test.conf": testDropIn,
		}, bins.installed())
		runCrash(t, &service{m: m, unit: "handoff.service", addr: addr, bins: bins}, port, "cbpf")
	})

	t.Run("crash-ebpf", func(t *testing.T) {
		// As root the master steers with eBPF, and keeps the selector
		// (program and maps) in the fd store with the sockets.
		addr, port := freeAddr(t)
		unit := strings.Replace(exampleUnit(t, "handoff.service", addr), "--workers auto", fmt.Sprintf("--workers %d", crashWorkers), 1)
		m := boot(t, h, filepath.Join(work, "crash-ebpf"), map[string]string{
			"handoff.service":             unit,
			"handoff.service.d/test.conf": testDropIn + "[Service]\nDynamicUser=no\n",
		}, bins.installed())
		runCrash(t, &service{m: m, unit: "handoff.service", addr: addr, bins: bins}, port, "ebpf")
	})

	t.Run("socket", func(t *testing.T) {
		addr, port := freeAddr(t)
		m := boot(t, h, filepath.Join(work, "socket"), map[string]string{
			"handoff-activated.socket":              exampleUnit(t, "handoff-activated.socket", addr),
			"handoff-activated.socket.d/test.conf":  testDropIn,
			"handoff-activated.service":             exampleUnit(t, "handoff-activated.service", addr),
			"handoff-activated.service.d/test.conf": testDropIn,
		}, bins.installed())
		runSocket(t, &service{m: m, unit: "handoff-activated.service", addr: addr, bins: bins}, "handoff-activated.socket", port)
	})

	t.Run("reload-wait", func(t *testing.T) {
		// Before the boot: systemd takes the controllers it can use
		// from its cgroup as it starts.
		memory := enableController(t, h.cgroups, "memory")
		addr, _ := freeAddr(t)
		m := boot(t, h, filepath.Join(work, "reload-wait"), map[string]string{
			"handoff-reload-wait.service": exampleUnit(t, "handoff-reload-wait.service", addr),
			// MemoryMax= for the OOM test: far above what the hello
			// workers take, below what an alloc worker takes.
			"handoff-reload-wait.service.d/test.conf": testDropIn + fmt.Sprintf("[Service]\nMemoryMax=%d\nMemorySwapMax=0\n", oomLimit),
		}, bins.installed())
		s := &service{m: m, unit: "handoff-reload-wait.service", addr: addr, bins: bins, reloadWaits: true}
		runReloadWait(t, s)
		t.Run("oom", func(t *testing.T) { runOOM(t, s, memory) })
	})

	t.Run("notify-reload", func(t *testing.T) {
		if h.version < 253 {
			t.Skipf("systemd %d has no Type=notify-reload (it came in 253)", h.version)
		}
		addr, _ := freeAddr(t)
		m := boot(t, h, filepath.Join(work, "notify-reload"), map[string]string{
			"handoff-notify-reload.service":             exampleUnit(t, "handoff-notify-reload.service", addr),
			"handoff-notify-reload.service.d/test.conf": testDropIn,
		}, bins.installed())
		runReloads(t, &service{m: m, unit: "handoff-notify-reload.service", addr: addr, bins: bins, reloadWaits: true})
	})
}

// binaries are the builds the test installs and swaps.
type binaries struct {
	handoff     string // the module's root package
	handoffNext string // the same, linked differently: a master upgrade
	helloV1     string // examples/hello answering version=v1
	helloV2     string // ... version=v2
	helloBroken string // exits 1 at once
	testapp     string // internal/e2e/testdata/testapp
}

// installed is what a machine starts with.
func (b *binaries) installed() map[string]string {
	return map[string]string{handoffPath: b.handoff, helloPath: b.helloV1}
}

func build(t *testing.T, dir string) *binaries {
	t.Helper()
	start := time.Now()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	b := &binaries{
		handoff:     filepath.Join(dir, "handoff"),
		handoffNext: filepath.Join(dir, "handoff-next"),
		helloV1:     filepath.Join(dir, "hello-v1"),
		helloV2:     filepath.Join(dir, "hello-v2"),
		helloBroken: filepath.Join(dir, "hello-broken"),
		testapp:     filepath.Join(dir, "testapp"),
	}
	for _, bb := range []struct{ out, pkg, ldflags string }{
		{b.handoff, ".", ""},
		{b.handoffNext, ".", "-X main.version=systemd-test-next"},
		{b.helloV1, "./examples/hello", "-X main.version=v1"},
		{b.helloV2, "./examples/hello", "-X main.version=v2"},
		{b.testapp, "./internal/e2e/testdata/testapp", ""},
	} {
		cmd := exec.Command("go", "build", "-o", bb.out, "-ldflags", bb.ldflags, bb.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s (-ldflags %q): %v\n%s", bb.pkg, bb.ldflags, err, out)
		}
	}
	if err := writeFile(b.helloBroken, []byte(brokenHello), 0o755); err != nil {
		t.Fatal(err)
	}
	same, err := sameBytes(b.handoff, b.handoffNext)
	if err != nil {
		t.Fatal(err)
	}
	if same {
		t.Fatal("handoff and handoff-next came out identical: a master upgrade needs different bytes")
	}
	t.Logf("built handoff and hello in %s", time.Since(start).Round(time.Millisecond))
	return b
}

func sameBytes(a, b string) (bool, error) {
	var sums [2][32]byte
	for i, p := range []string{a, b} {
		data, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("hash %s: %w", p, err)
		}
		sums[i] = sha256.Sum256(data)
	}
	return sums[0] == sums[1], nil
}

// exampleUnit returns the example unit file name, listening on addr
// instead of exampleAddr.
func exampleUnit(t *testing.T, name, addr string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("example unit: %v", err)
	}
	if !bytes.Contains(b, []byte(exampleAddr)) {
		t.Fatalf("example unit %s does not listen on %s", name, exampleAddr)
	}
	return strings.ReplaceAll(string(b), exampleAddr, addr)
}

func freeAddr(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	return fmt.Sprintf("127.0.0.1:%d", port), port
}

// service is a unit under test in a machine.
type service struct {
	m           *machine
	unit        string
	addr        string
	bins        *binaries
	reloadWaits bool  // systemctl reload returns once the reload is over
	masters     []int // every MainPID seen
}

// unitProps are the properties waitUnit reads.
var unitProps = []string{"ActiveState", "SubState", "Result", "MainPID", "NRestarts", "StatusText"}

func describe(p map[string]string) string {
	return fmt.Sprintf("ActiveState=%s SubState=%s Result=%s MainPID=%s NRestarts=%s StatusText=%q",
		p["ActiveState"], p["SubState"], p["Result"], p["MainPID"], p["NRestarts"], p["StatusText"])
}

// waitUnit polls the unit's properties until pred holds; it gives up at
// once if the unit fails.
func (s *service) waitUnit(timeout time.Duration, what string, pred func(map[string]string) bool) (map[string]string, error) {
	var last map[string]string
	failed := false
	err := s.m.poll(timeout, func() (bool, string) {
		p, err := s.m.show(s.unit, unitProps...)
		if err != nil {
			return false, err.Error()
		}
		last = p
		if p["ActiveState"] == "failed" {
			failed = true
			return true, ""
		}
		return pred(p), describe(p)
	})
	if err == nil && failed {
		err = fmt.Errorf("the unit failed: %s", describe(last))
	}
	if err != nil {
		return last, fmt.Errorf("waiting for %s: %w", what, err)
	}
	s.sawMaster(atoi(last["MainPID"]))
	return last, nil
}

func (s *service) sawMaster(pid int) {
	for _, p := range s.masters {
		if p == pid {
			return
		}
	}
	if pid > 0 {
		s.masters = append(s.masters, pid)
	}
}

var statusGenRE = regexp.MustCompile(`^gen (\d+) serving`)

// servingGen reads the serving generation from a StatusText, or -1.
func servingGen(status string) int {
	m := statusGenRE.FindStringSubmatch(status)
	if m == nil {
		return -1
	}
	return atoi(m[1])
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func active(p map[string]string) bool { return p["ActiveState"] == "active" }

// servingAt is a waitUnit predicate: active, and StatusText names gen.
func servingAt(gen int) func(map[string]string) bool {
	return func(p map[string]string) bool { return active(p) && servingGen(p["StatusText"]) == gen }
}

// start starts the unit and waits until it is active, returning its
// properties then.
func (s *service) start(t *testing.T) map[string]string {
	t.Helper()
	if err := s.m.systemctl("start", "--no-block", s.unit); err != nil {
		t.Fatalf("start: %v", err)
	}
	p, err := s.waitUnit(20*time.Second, "the unit to become active", active)
	if op, oerr := s.m.show(s.unit, "OOMPolicy"); oerr != nil || op["OOMPolicy"] != "continue" {
		t.Errorf("%s: OOMPolicy=%q (%v), want continue: a worker killed by the OOM killer must not stop the unit", s.unit, op["OOMPolicy"], oerr)
	}
	if err != nil {
		t.Errorf("start: %v (the master sends no READY=1?)", err)
		if a, err := get(s.addr, 5*time.Second); err != nil {
			t.Errorf("and the workers do not answer either: %v", err)
		} else {
			t.Logf("the workers answer all the same: %s", a)
		}
		t.FailNow()
	}
	return p
}

// reload runs systemctl reload. With Type=notify-reload that returns once
// the master is ready again, so the unit must then be as want says.
func (s *service) reload(t *testing.T, what string, want func(map[string]string) bool) {
	t.Helper()
	if err := s.m.systemctl("reload", s.unit); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !s.reloadWaits {
		return
	}
	p, err := s.m.show(s.unit, unitProps...)
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	if !want(p) {
		t.Errorf("systemctl reload returned before the reload was over: want %s, have %s", what, describe(p))
	}
}

// noteCount returns how many notifications systemd logged for the unit so
// far, to look only at those that follow.
func (s *service) noteCount(t *testing.T) int {
	t.Helper()
	ns, err := s.m.notifications(s.unit)
	if err != nil {
		t.Fatalf("notifications: %v", err)
	}
	return len(ns)
}

// expectNotes waits until the notifications after the first skip contain
// a match for each step, in order (the journal lags a little).
func (s *service) expectNotes(t *testing.T, what string, skip int, steps ...func(notification) bool) {
	t.Helper()
	var got []notification
	err := s.m.poll(10*time.Second, func() (bool, string) {
		ns, err := s.m.notifications(s.unit)
		if err != nil {
			return false, err.Error()
		}
		if skip < len(ns) {
			got = ns[skip:]
		}
		i := 0
		for _, n := range got {
			if i < len(steps) && steps[i](n) {
				i++
			}
		}
		return i == len(steps), fmt.Sprintf("%d of %d in order", i, len(steps))
	})
	if err != nil {
		var b strings.Builder
		for _, n := range got {
			fmt.Fprintf(&b, "\n\tPID %d: %s", n.PID, n.Raw)
		}
		t.Errorf("notify messages: want %s: %v; systemd got:%s", what, err, b.String())
	}
}

func from(pid int, fields ...string) func(notification) bool {
	return func(n notification) bool {
		if n.PID != pid {
			return false
		}
		for i := 0; i+1 < len(fields); i += 2 {
			v, ok := n.Fields[fields[i]]
			if !ok || (fields[i+1] != "*" && v != fields[i+1]) {
				return false
			}
		}
		return true
	}
}

// checkNotifiers fails the test if anything but a master sent the unit's
// systemd a notification: workers must report to the master only.
func (s *service) checkNotifiers(t *testing.T) {
	t.Helper()
	ns, err := s.m.notifications(s.unit)
	if err != nil {
		t.Errorf("notifications: %v", err)
		return
	}
	for _, n := range ns {
		known := false
		for _, p := range s.masters {
			known = known || n.PID == p
		}
		if !known {
			t.Errorf("notify message from PID %d, not a master (masters: %v): %s", n.PID, s.masters, n.Raw)
		}
	}
	// NotifyAccess=main: systemd logs each message it refuses. A master
	// must never speak out of turn (a new one before the old one named
	// it the main process).
	out, err := s.m.journal(s.unit)
	if err != nil {
		t.Errorf("journal: %v", err)
		return
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "reception only permitted for main PID") {
			t.Errorf("systemd refused a notification: %s", line)
		}
	}
}

// checkNoKills fails the test if systemd had to kill any of the unit's
// processes: the master must drain its workers, on reload as on stop.
func (s *service) checkNoKills(t *testing.T) {
	t.Helper()
	out, err := s.m.journal(s.unit)
	if err != nil {
		t.Errorf("journal: %v", err)
		return
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Killing process") {
			t.Errorf("systemd killed a process of %s: %s", s.unit, line)
		}
	}
}

// status asks the master for its status, retrying while the control
// socket is not there yet (a master starting, or being replaced).
func (s *service) status(t *testing.T, what string, pred func(handoffStatus) bool) handoffStatus {
	t.Helper()
	st, err := s.pollStatus(10*time.Second, pred)
	if err != nil {
		t.Errorf("handoff status --json: want %s: %v", what, err)
	}
	return st
}

// pollStatus asks for the status until pred holds or timeout passes.
func (s *service) pollStatus(timeout time.Duration, pred func(handoffStatus) bool) (handoffStatus, error) {
	var st handoffStatus
	err := s.m.poll(timeout, func() (bool, string) {
		var err error
		st, err = s.m.handoffStatus(s.unit)
		if err != nil {
			return false, err.Error()
		}
		return pred(st), fmt.Sprintf("%+v", st)
	})
	return st, err
}

func allWorkers(st handoffStatus, gen int) bool {
	if st.Generation != gen || len(st.Workers) == 0 {
		return false
	}
	for _, w := range st.Workers {
		if w.Generation != gen || w.State != "ready" {
			return false
		}
	}
	return true
}

// runReloads is the life of a deployment: start, deploy a new app
// version, deploy a broken one (rolled back), upgrade handoff itself,
// stop; with traffic flowing all along.
func runReloads(t *testing.T, s *service) {
	// Start.
	p := s.start(t)
	master := atoi(p["MainPID"])
	if master <= 0 {
		t.Errorf("MainPID=%s after start", p["MainPID"])
	}
	if servingGen(p["StatusText"]) != 1 {
		t.Errorf("StatusText=%q after start, want it to begin with %q", p["StatusText"], "gen 1 serving")
	}
	s.expectNotes(t, "READY=1 from the master", 0, from(master, "READY", "1"))
	s.expectNotes(t, "STATUS=gen 1 serving… from the master", 0, func(n notification) bool {
		return n.PID == master && servingGen(n.Fields["STATUS"]) == 1
	})
	st := s.status(t, "generation 1, every worker ready, pid = MainPID", func(st handoffStatus) bool {
		return allWorkers(st, 1) && st.PID == master
	})
	t.Logf("started: MainPID %d, StatusText %q, %d workers", master, p["StatusText"], len(st.Workers))
	if _, err := s.waitAnswers(1, "v1"); err != nil {
		t.Fatalf("after start: %v", err)
	}

	traffic := startTraffic(s.addr)
	defer traffic.stop()

	// A new version of the app: rename it into place and reload.
	mark := s.noteCount(t)
	if err := s.m.install(s.bins.helloV2, helloPath); err != nil {
		t.Fatal(err)
	}
	s.reload(t, "gen 2 serving", servingAt(2))
	p, err := s.waitUnit(30*time.Second, "gen 2 serving", servingAt(2))
	if err != nil {
		t.Fatalf("reload to hello v2: %v", err)
	}
	if pid := atoi(p["MainPID"]); pid != master {
		t.Errorf("MainPID changed from %d to %d on a reload of the workers", master, pid)
	}
	if _, err := s.waitAnswers(2, "v2"); err != nil {
		t.Errorf("after reload to v2: %v", err)
	}
	s.expectNotes(t, "RELOADING=1 with MONOTONIC_USEC=, then READY=1", mark,
		from(master, "RELOADING", "1", "MONOTONIC_USEC", "*"), from(master, "READY", "1"))
	s.status(t, "generation 2, every worker ready, last reload ok", func(st handoffStatus) bool {
		return allWorkers(st, 2) && st.LastReload != nil && st.LastReload.OK && st.LastReload.Generation == 2
	})
	t.Logf("reloaded: StatusText %q", p["StatusText"])

	// A broken release: the reload fails, generation 2 keeps serving.
	mark = s.noteCount(t)
	if err := s.m.install(s.bins.helloBroken, helloPath); err != nil {
		t.Fatal(err)
	}
	failedRE := regexp.MustCompile(`^gen 2 serving\b.*\breload to gen \d+ failed`)
	rolledBack := func(p map[string]string) bool { return active(p) && failedRE.MatchString(p["StatusText"]) }
	s.reload(t, "StatusText `gen 2 serving…reload to gen N failed…`", rolledBack)
	p, err = s.waitUnit(30*time.Second, "StatusText `gen 2 serving…reload to gen N failed…`", rolledBack)
	if err != nil {
		t.Errorf("failed reload: %v", err)
	} else {
		t.Logf("failed reload: StatusText %q", p["StatusText"])
	}
	if _, err := s.waitAnswers(2, "v2"); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
	s.expectNotes(t, "RELOADING=1, then READY=1 after the rollback", mark,
		from(master, "RELOADING", "1"), from(master, "READY", "1"))
	s.status(t, "generation 2 serving, last reload failed", func(st handoffStatus) bool {
		return allWorkers(st, 2) && st.LastReload != nil && !st.LastReload.OK
	})
	if err := s.m.install(s.bins.helloV2, helloPath); err != nil {
		t.Fatal(err)
	}

	// A new handoff: the master replaces itself.
	mark = s.noteCount(t)
	if err := s.m.install(s.bins.handoffNext, handoffPath); err != nil {
		t.Fatal(err)
	}
	upgraded := func(p map[string]string) bool {
		return active(p) && atoi(p["MainPID"]) != master && servingGen(p["StatusText"]) > 2
	}
	s.reload(t, "a new MainPID, serving a generation after 2", upgraded)
	p, err = s.waitUnit(30*time.Second, "a new MainPID, serving a generation after 2", upgraded)
	if err != nil {
		t.Fatalf("master upgrade: %v", err)
	}
	next, gen := atoi(p["MainPID"]), servingGen(p["StatusText"])
	t.Logf("master upgraded: MainPID %d -> %d, StatusText %q", master, next, p["StatusText"])
	if _, err := s.waitAnswers(gen, "v2"); err != nil {
		t.Errorf("after the master upgrade: %v", err)
	}
	// NotifyAccess=main: the old master, still the main process, names
	// the new one, which then announces itself ready.
	s.expectNotes(t, "RELOADING=1 and MAINPID=<new pid> from the old master, then MAINPID=<its pid> READY=1 from the new one", mark,
		from(master, "RELOADING", "1", "MONOTONIC_USEC", "*"), from(master, "MAINPID", strconv.Itoa(next)),
		from(next, "MAINPID", strconv.Itoa(next), "READY", "1"))
	s.status(t, fmt.Sprintf("generation %d from the new master", gen), func(st handoffStatus) bool {
		return allWorkers(st, gen) && st.PID == next
	})
	if err := s.m.poll(20*time.Second, func() (bool, string) {
		return s.m.hostPID(master) == 0, fmt.Sprintf("the old master (pid %d) is still running", master)
	}); err != nil {
		t.Errorf("after the master upgrade: %v", err)
	}

	traffic.check(t)

	// Stop: the master drains its workers and exits 0.
	p, _ = s.m.show(s.unit, unitProps...)
	if p["NRestarts"] != "0" {
		t.Errorf("the unit was restarted: %s", describe(p))
	}
	mark = s.noteCount(t)
	if err := s.m.systemctl("stop", s.unit); err != nil {
		t.Errorf("stop: %v", err)
	}
	p, err = s.m.show(s.unit, unitProps...)
	if err != nil {
		t.Fatalf("after stop: %v", err)
	}
	if p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after stop: %s, want ActiveState=inactive Result=success", describe(p))
	}
	s.expectNotes(t, "STOPPING=1 from the master", mark, from(next, "STOPPING", "1"))
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after stop", s.addr)
	}
	s.checkNotifiers(t)
	s.checkNoKills(t)
}

// runWatchdog checks WATCHDOG=1 keeps coming, also after a master upgrade.
func runWatchdog(t *testing.T, s *service) {
	p := s.start(t)
	master := atoi(p["MainPID"])
	s.expectNotes(t, "three WATCHDOG=1 from the master", 0,
		from(master, "WATCHDOG", "1"), from(master, "WATCHDOG", "1"), from(master, "WATCHDOG", "1"))

	if err := s.m.install(s.bins.handoffNext, handoffPath); err != nil {
		t.Fatal(err)
	}
	mark := s.noteCount(t)
	upgraded := func(p map[string]string) bool {
		return active(p) && atoi(p["MainPID"]) != master && servingGen(p["StatusText"]) > 1
	}
	s.reload(t, "a new MainPID", upgraded)
	p, err := s.waitUnit(30*time.Second, "a new MainPID", upgraded)
	if err != nil {
		t.Fatalf("master upgrade: %v", err)
	}
	next := atoi(p["MainPID"])
	s.expectNotes(t, "three WATCHDOG=1 from the new master", mark,
		from(next, "WATCHDOG", "1"), from(next, "WATCHDOG", "1"), from(next, "WATCHDOG", "1"))
	p, err = s.m.show(s.unit, unitProps...)
	if err != nil {
		t.Fatal(err)
	}
	if !active(p) || p["NRestarts"] != "0" || atoi(p["MainPID"]) != next {
		t.Errorf("after the pings: %s, want it active, never restarted, MainPID %d", describe(p), next)
	}
	if _, err := s.waitAnswers(servingGen(p["StatusText"]), "v1"); err != nil {
		t.Error(err)
	}
}

// runSocket checks the master serves on the socket systemd holds, and
// never binds its own.
func runSocket(t *testing.T, s *service, socket string, port int) {
	if err := s.m.systemctl("start", socket); err != nil {
		t.Fatalf("start %s: %v", socket, err)
	}
	if p, err := s.m.show(socket, "ActiveState"); err != nil || p["ActiveState"] != "active" {
		t.Fatalf("%s: %v %v", socket, p, err)
	}
	if p, err := s.m.show(s.unit, unitProps...); err != nil || p["ActiveState"] != "inactive" {
		t.Errorf("%s before the first connection: %v %v, want inactive", s.unit, describe(p), err)
	}
	inode := s.onlyListener(t, port)
	if !holdsSocket(s.m.pid, inode) {
		t.Fatalf("the socket listening on port %d (inode %s) is not systemd's", port, inode)
	}

	// The first connection starts the service.
	a, err := get(s.addr, 30*time.Second)
	if err != nil {
		t.Fatalf("first request (starts the service): %v", err)
	}
	if a.gen != 1 || a.version != "v1" {
		t.Errorf("first answer: %s, want generation 1, v1", a)
	}
	p, err := s.waitUnit(20*time.Second, "gen 1 serving", servingAt(1))
	if err != nil {
		t.Fatalf("socket-activated start: %v", err)
	}
	master := atoi(p["MainPID"])
	if got := s.onlyListener(t, port); got != inode {
		t.Errorf("the master put its own socket (inode %s) in place of systemd's (%s)", got, inode)
	}
	if hp := s.m.hostPID(master); hp == 0 || !holdsSocket(hp, inode) {
		t.Errorf("the master (MainPID %d, host pid %d) does not hold systemd's socket %s", master, hp, inode)
	}

	// A reload serves the new version on the same socket.
	if err := s.m.install(s.bins.helloV2, helloPath); err != nil {
		t.Fatal(err)
	}
	s.reload(t, "gen 2 serving", servingAt(2))
	if _, err := s.waitUnit(30*time.Second, "gen 2 serving", servingAt(2)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, err := s.waitAnswers(2, "v2"); err != nil {
		t.Errorf("after reload: %v", err)
	}
	if got := s.onlyListener(t, port); got != inode {
		t.Errorf("after reload the listening socket is %s, not systemd's %s", got, inode)
	}

	// Stopped, the service leaves the socket to systemd, which starts it
	// again on the next connection.
	if err := s.m.systemctl("stop", s.unit); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if p, err := s.m.show(s.unit, unitProps...); err != nil || p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after stop: %s %v, want ActiveState=inactive Result=success", describe(p), err)
	}
	if p, err := s.m.show(socket, "ActiveState"); err != nil || p["ActiveState"] != "active" {
		t.Errorf("%s after the service stopped: %v %v", socket, p, err)
	}
	if got := s.onlyListener(t, port); got != inode {
		t.Errorf("after stop the listening socket is %s, not systemd's %s", got, inode)
	}
	a, err = get(s.addr, 30*time.Second)
	if err != nil {
		t.Fatalf("request after stop (starts the service again): %v", err)
	}
	if a.version != "v2" {
		t.Errorf("answer after restart: %s, want v2", a)
	}
	if _, err := s.waitUnit(20*time.Second, "active again", active); err != nil {
		t.Errorf("socket-activated restart: %v", err)
	}
	s.checkNotifiers(t)
	s.checkNoKills(t)
}

// onlyListener returns the inode of the one socket listening on port.
func (s *service) onlyListener(t *testing.T, port int) string {
	t.Helper()
	inodes, err := listeningInodes(port)
	if err != nil {
		t.Fatal(err)
	}
	if len(inodes) != 1 {
		t.Fatalf("%d sockets listen on port %d (inodes %v), want 1", len(inodes), port, inodes)
	}
	return inodes[0]
}

// answer is what examples/hello says.
type answer struct {
	pid, slot, gen int
	version        string
}

func (a answer) String() string {
	return fmt.Sprintf("pid=%d slot=%d generation=%d version=%s", a.pid, a.slot, a.gen, a.version)
}

var answerRE = regexp.MustCompile(`^pid=(\d+) slot=(\d+) generation=(\d+) version=(\S+)\n$`)

// get asks hello once, on a new connection.
func get(addr string, timeout time.Duration) (answer, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	return ask(c, addr)
}

func ask(c *http.Client, addr string) (answer, error) {
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("read answer: %w", err)
	}
	m := answerRE.FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusOK || m == nil {
		return answer{}, fmt.Errorf("answer %s %q", resp.Status, body)
	}
	return answer{pid: atoi(m[1]), slot: atoi(m[2]), gen: atoi(m[3]), version: m[4]}, nil
}

// waitAnswers waits until ten answers in a row, each on a new connection,
// come from generation gen running version.
func (s *service) waitAnswers(gen int, version string) (answer, error) {
	var a answer
	streak := 0
	err := s.m.poll(30*time.Second, func() (bool, string) {
		var err error
		a, err = get(s.addr, 5*time.Second)
		switch {
		case err != nil:
			streak = 0
			return false, err.Error()
		case a.gen != gen || a.version != version:
			streak = 0
			return false, "answer " + a.String()
		}
		streak++
		return streak == 10, a.String()
	})
	if err != nil {
		return a, fmt.Errorf("want answers from generation %d, %s: %w", gen, version, err)
	}
	return a, nil
}

// traffic asks hello continuously, on keep-alive connections as a real
// client would, and records what fails.
type traffic struct {
	quit chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	ok    int
	fails []string
}

func startTraffic(addr string) *traffic {
	tr := &traffic{quit: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(tr.done)
		defer c.CloseIdleConnections()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.quit:
				return
			case <-tick.C:
			}
			_, err := ask(c, addr)
			tr.mu.Lock()
			if err != nil {
				tr.fails = append(tr.fails, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			} else {
				tr.ok++
			}
			tr.mu.Unlock()
		}
	}()
	return tr
}

// stop ends the traffic and returns how many requests were answered and
// what failed.
func (tr *traffic) stop() (int, []string) {
	tr.once.Do(func() { close(tr.quit) })
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok, tr.fails
}

// check stops the traffic, logs how many requests were answered, and
// fails the test for each that failed (the first ten, and a count).
func (tr *traffic) check(t *testing.T) {
	t.Helper()
	ok, fails := tr.stop()
	t.Logf("traffic during the reloads: %d requests answered, %d failed", ok, len(fails))
	for i, f := range fails {
		if i == 10 {
			t.Errorf("… and %d more", len(fails)-i)
			break
		}
		t.Errorf("request failed during the reloads: %s", f)
	}
}

// runReloadWait checks the unit whose ExecReload= is 'handoff reload
// --wait': systemctl reload fails on a rolled-back release, with the unit
// active and the previous generation serving, and succeeds on a good one,
// returning only once it serves.
func runReloadWait(t *testing.T, s *service) {
	p := s.start(t)
	master := atoi(p["MainPID"])
	if _, err := s.waitAnswers(1, "v1"); err != nil {
		t.Fatalf("after start: %v", err)
	}
	traffic := startTraffic(s.addr)
	defer traffic.stop()

	// A broken release: the reload is rolled back, and systemctl says so.
	if err := s.m.install(s.bins.helloBroken, helloPath); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := s.m.systemctl("reload", s.unit)
	took := time.Since(start)
	if err == nil {
		t.Errorf("systemctl reload of a release that never gets ready succeeded; want it to fail")
	} else {
		t.Logf("systemctl reload of a broken release failed after %s, as it should: %v", took.Round(time.Millisecond), err)
	}
	failedRE := regexp.MustCompile(`^gen 1 serving\b.*\breload to gen 2 failed`)
	p, err = s.m.show(s.unit, unitProps...)
	if err != nil {
		t.Fatal(err)
	}
	if !active(p) || !failedRE.MatchString(p["StatusText"]) || atoi(p["MainPID"]) != master || p["NRestarts"] != "0" {
		t.Errorf("right after the failed systemctl reload: %s; want it active (reload over), MainPID %d, never restarted, StatusText `gen 1 serving…reload to gen 2 failed…`",
			describe(p), master)
	}
	if _, err := s.waitAnswers(1, "v1"); err != nil {
		t.Errorf("after the rolled-back reload: %v", err)
	}
	s.status(t, "generation 1 serving, last reload (generation 2) failed", func(st handoffStatus) bool {
		return allWorkers(st, 1) && st.LastReload != nil && !st.LastReload.OK && st.LastReload.Generation == 2
	})

	// A good release: systemctl reload returns once it serves.
	if err := s.m.install(s.bins.helloV2, helloPath); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	s.reload(t, "gen 3 serving", servingAt(3))
	t.Logf("systemctl reload of a good release returned after %s", time.Since(start).Round(time.Millisecond))
	s.status(t, "generation 3 alone, last reload ok", func(st handoffStatus) bool {
		return allWorkers(st, 3) && st.LastReload != nil && st.LastReload.OK && st.LastReload.Generation == 3
	})
	if _, err := s.waitAnswers(3, "v2"); err != nil {
		t.Errorf("after reload to v2: %v", err)
	}
	traffic.check(t)
	s.checkNotifiers(t)
	s.checkNoKills(t)
}

// oomLimit is the test unit's MemoryMax=, and oomAlloc what the alloc
// worker takes: well past it.
const (
	oomLimit = 256 << 20
	oomAlloc = "512MiB"
)

// runOOM has one worker allocate past the unit's MemoryMax=: the kernel's
// OOM killer kills it, the master replaces it, and (OOMPolicy=continue)
// the unit stays active with its master. It needs the memory controller
// in the cgroup2 hierarchy systemd runs on.
func runOOM(t *testing.T, s *service, memory error) {
	ctl, err := s.m.output(10*time.Second, "cat", "/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(" "+strings.TrimSpace(ctl)+" ", " memory ") {
		t.Skipf("no memory controller for systemd's cgroups here (%v; controllers in its namespace: %q). On a hybrid cgroup host "+
			"the memory controller is bound to cgroup v1, so MemoryMax= is not enforced and systemd cannot see OOM kills "+
			"(memory.events): OOMPolicy= cannot be exercised", memory, strings.TrimSpace(ctl))
	}
	p, err := s.m.show(s.unit, "ControlGroup", "MainPID", "NRestarts")
	if err != nil {
		t.Fatal(err)
	}
	master := atoi(p["MainPID"])
	limit, err := s.m.output(10*time.Second, "cat", "/sys/fs/cgroup"+p["ControlGroup"]+"/memory.max")
	if err != nil || strings.TrimSpace(limit) != strconv.Itoa(oomLimit) {
		t.Fatalf("the unit's memory.max is %q (%v), want %d from MemoryMax=", strings.TrimSpace(limit), err, oomLimit)
	}

	// Switch the app to testapp's alloc mode with a reload: one worker
	// allocates once /run/handoff/alloc appears.
	if err := s.m.install(s.bins.testapp, "opt/hello/testapp"); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "alloc.sh")
	if err := writeFile(wrapper, []byte("#!/bin/sh\nexec /opt/hello/testapp -mode alloc -gate /run/handoff/alloc -alloc "+oomAlloc+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.m.install(wrapper, helloPath); err != nil {
		t.Fatal(err)
	}
	if err := s.m.systemctl("reload", s.unit); err != nil {
		t.Fatalf("reload to the alloc app: %v", err)
	}
	before := s.status(t, "every worker of the alloc app ready", func(st handoffStatus) bool {
		return st.LastReload != nil && st.LastReload.OK && allWorkers(st, st.Generation)
	})
	killedBefore := before.Counters.Restarts["killed"]
	old := map[int]bool{}
	for _, w := range before.Workers {
		old[w.PID] = true
	}

	if _, err := s.m.output(10*time.Second, "touch", "/run/handoff/alloc"); err != nil {
		t.Fatal(err)
	}
	after := s.statusWithin(t, 60*time.Second, "a worker killed and replaced, every slot ready again", func(st handoffStatus) bool {
		replaced := 0
		for _, w := range st.Workers {
			if !old[w.PID] {
				replaced++
			}
		}
		return st.Counters.Restarts["killed"] > killedBefore && replaced == 1 && allWorkers(st, before.Generation)
	})
	t.Logf("restarts by reason after the OOM kill: %v", after.Counters.Restarts)

	out, err := s.m.journal(s.unit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "killed by the OOM killer") {
		t.Errorf("systemd logged no OOM kill for %s; its journal:\n%s", s.unit, out)
	}
	p, err = s.m.show(s.unit, unitProps...)
	if err != nil {
		t.Fatal(err)
	}
	if !active(p) || atoi(p["MainPID"]) != master || p["NRestarts"] != "0" || p["Result"] != "success" {
		t.Errorf("after the OOM kill: %s; want it active, MainPID %d, never restarted, Result=success", describe(p), master)
	}
}

// enableController makes a cgroup2 controller available to the cgroups
// made under dir (the machines'), if the host allows it, until the test
// ends. It returns why not, or nil.
func enableController(t *testing.T, dir, name string) error {
	has := func(file string) (bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		return slices.Contains(strings.Fields(string(b)), name), err
	}
	if ok, err := has("cgroup.controllers"); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%s has no %s controller in cgroup2", dir, name)
		}
		return err
	}
	if ok, _ := has("cgroup.subtree_control"); ok {
		return nil
	}
	ctl := filepath.Join(dir, "cgroup.subtree_control")
	if err := os.WriteFile(ctl, []byte("+"+name), 0); err != nil {
		return fmt.Errorf("cannot enable %s for the cgroups under %s: %w", name, dir, err)
	}
	t.Cleanup(func() {
		// After the machine's cgroup is gone (registered earlier, run
		// later): undo what this test changed.
		if err := os.WriteFile(ctl, []byte("-"+name), 0); err != nil {
			t.Logf("cannot disable %s again in %s: %v", name, ctl, err)
		}
	})
	return nil
}

// statusWithin is status with a timeout of its own.
func (s *service) statusWithin(t *testing.T, timeout time.Duration, what string, pred func(handoffStatus) bool) handoffStatus {
	t.Helper()
	st, err := s.pollStatus(timeout, pred)
	if err != nil {
		t.Fatalf("handoff status --json: want %s: %v", what, err)
	}
	return st
}
