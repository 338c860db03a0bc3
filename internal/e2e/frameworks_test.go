//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The servers people run, each under handoff with the exact command line
// its README gives (examples/python, examples/ruby, examples/node,
// examples/lighttpd): it gets ready, serves, goes through 5 reloads under
// a strict load (a new connection per request, never retried, every
// connect error, reset, short read and non-200 counted), and stops leaving
// no process and a free port behind.
// examples/install-runtimes.sh installs the runtimes; a test whose runtime
// is missing skips and names the package.
//
// For measuring the failure counts of the README's "Servers, tested",
// HANDOFF_FRAMEWORK_RELOADS=N runs N reloads instead of 5, and
// HANDOFF_FRAMEWORK_PACE=0 lets the clients send as fast as they can:
//
//	HANDOFF_FRAMEWORK_RELOADS=20 HANDOFF_FRAMEWORK_PACE=0 go test -run TestFramework -parallel 1 -v .
//
// HANDOFF_FRAMEWORK_BALANCE=shared runs them on one shared socket, as
// before steering, for the figures without it: there the servers whose
// own shutdown races lose a few requests, and the test only bounds them.

const (
	frameworkWorkers = 2
	frameworkClients = 4
)

// frameworkPace is the shortest time between two requests of one client:
// 4ms (at most 1,000 requests/s in all), enough to have requests arriving
// at every moment of a reload while leaving the 2 cores of CI to the
// servers starting and stopping; or HANDOFF_FRAMEWORK_PACE.
func frameworkPace(t *testing.T) time.Duration {
	v := os.Getenv("HANDOFF_FRAMEWORK_PACE")
	if v == "" {
		return 4 * time.Millisecond
	}
	if v == "0" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("HANDOFF_FRAMEWORK_PACE=%q: want a duration such as 4ms, or 0", v)
	}
	return d
}

// frameworkReloads is 5, or HANDOFF_FRAMEWORK_RELOADS.
func frameworkReloads(t *testing.T) int {
	v := os.Getenv("HANDOFF_FRAMEWORK_RELOADS")
	if v == "" {
		return 5
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("HANDOFF_FRAMEWORK_RELOADS=%q: want a number of at least 1", v)
	}
	return n
}

// frameworkServer is one server's command line under handoff.
type frameworkServer struct {
	name    string
	flags   []string // handoff flags besides --workers
	command []string
	path    string // what the load requests
	want    string // every answer contains this
	// generation is true when answers say "generation=N".
	generation bool
	// racy marks a server whose own shutdown loses requests; the test then
	// bounds the failures instead of requiring none.
	racy string
}

func TestFrameworkGunicorn(t *testing.T) {
	t.Parallel()
	gunicorn := needGunicorn(t)
	runFramework(t, frameworkServer{
		name:       "gunicorn",
		flags:      []string{"--drain-timeout", "30s"},
		command:    []string{gunicorn, "--chdir", "examples/python", "--workers", "1", "--preload", "--graceful-timeout", "20", "flaskapp:app"},
		path:       "/",
		want:       "server=gunicorn",
		generation: true,
	})
}

func TestFrameworkUvicorn(t *testing.T) {
	t.Parallel()
	py := needPythonModule(t, "uvicorn", "python3-uvicorn")
	runFramework(t, frameworkServer{
		name: "uvicorn",
		// As examples/python/README.md runs it: asgi.py sends READY=1
		// from its lifespan startup (a probe, --ready http=/, is for
		// apps that cannot).
		command:    []string{py, "-m", "uvicorn", "--app-dir", "examples/python", "--fd", "3", "--no-access-log", "asgi:app"},
		path:       "/",
		want:       "server=uvicorn",
		generation: true,
		// uvicorn's shutdown closes the connections it has accepted but
		// not yet read a request from: each such client gets EOF or a
		// reset, on a shared socket. Steered, it loses none.
		racy: "uvicorn closes accepted connections it has not read from yet",
	})
}

func TestFrameworkPuma(t *testing.T) {
	t.Parallel()
	puma := needPuma(t)
	runFramework(t, frameworkServer{
		name:       "puma",
		command:    []string{puma, "--bind-to-activated-sockets", "only", "--environment", "production", "examples/ruby/config.ru"},
		path:       "/",
		want:       "server=puma",
		generation: true,
		// At shutdown puma's reactor closes every connection from which it
		// has parsed no byte yet (Client#can_close?), so a request whose
		// bytes arrive just after the stop gets EOF, on a shared socket.
		// Steered, it loses none, as uvicorn.
		racy: "puma closes accepted connections whose request has not arrived yet",
	})
}

func TestFrameworkExpress(t *testing.T) {
	t.Parallel()
	node, ready := needNodeModule(t, "express")
	runFramework(t, frameworkServer{
		name:       "express",
		flags:      ready,
		command:    []string{node, "examples/node/express.js"},
		path:       "/",
		want:       "server=express",
		generation: true,
	})
}

func TestFrameworkFastify(t *testing.T) {
	t.Parallel()
	node, ready := needNodeModule(t, "fastify")
	runFramework(t, frameworkServer{
		name:       "fastify",
		flags:      ready,
		command:    []string{node, "examples/node/fastify.js"},
		path:       "/",
		want:       "server=fastify",
		generation: true,
	})
}

func TestFrameworkLighttpd(t *testing.T) {
	t.Parallel()
	lighttpd := needExecutable(t, "lighttpd", "lighttpd")
	runFramework(t, frameworkServer{
		name:    "lighttpd",
		flags:   []string{"--ready", "http=/hello.txt", "--stop-signal", "SIGINT"},
		command: []string{lighttpd, "-D", "-f", "examples/lighttpd/lighttpd.conf"},
		path:    "/hello.txt",
		want:    "served by lighttpd under handoff",
	})
}

// gunicorn's arbiter sends READY=1 before its worker imports the app, so
// an app that fails to import would be "ready" first. With --preload the
// arbiter imports it before READY=1: a broken release exits first and the
// reload is rolled back, the old generation serving on untouched.
func TestFrameworkGunicornPreloadRollsBack(t *testing.T) {
	t.Parallel()
	gunicorn := needGunicorn(t)
	dir := t.TempDir()
	src, err := os.ReadFile("examples/python/flaskapp.py")
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "flaskapp.py")
	if err := os.WriteFile(app, src, 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMaster(t, []string{"--workers", "1", "--ready-timeout", "30s"},
		gunicorn, "--chdir", dir, "--workers", "1", "--preload", "--graceful-timeout", "20", "flaskapp:app")
	waitSupervising(t, m)
	before := m.waitServing(1, 1)

	broken := filepath.Join(dir, "broken.py")
	if err := os.WriteFile(broken, []byte("raise RuntimeError('release 2 is broken')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, app); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := m.cli("reload", "--wait")
	if code != 1 || !strings.Contains(stderr, "before ready") {
		t.Fatalf("reload to a broken app: exit %d, stdout %q stderr %q; want 1 and a worker that exited before ready", code, stdout, stderr)
	}
	st := m.waitServing(1, 1)
	if st.Workers[0].PID != before.Workers[0].PID {
		t.Fatalf("the old generation was disturbed: %+v, before %+v", st.Workers, before.Workers)
	}
	if body, err := get(m.addr(), "/"); err != nil || field(body, "generation") != "1" {
		t.Fatalf("after the rollback: %q %v", body, err)
	}
}

// runFramework drives one server through start, reloads under load and
// stop.
// frameworkBalance is --balance: steer, or HANDOFF_FRAMEWORK_BALANCE.
func frameworkBalance(t *testing.T) string {
	switch v := os.Getenv("HANDOFF_FRAMEWORK_BALANCE"); v {
	case "":
		return "steer"
	case "steer", "sticky", "shared":
		return v
	default:
		t.Fatalf("HANDOFF_FRAMEWORK_BALANCE=%q: want steer, sticky or shared", v)
	}
	return ""
}

func runFramework(t *testing.T, s frameworkServer) {
	marker := fmt.Sprintf("HANDOFF_FRAMEWORK_TEST=%s-%d-%d", s.name, os.Getpid(), time.Now().UnixNano())
	balance := frameworkBalance(t)
	flags := append([]string{"--workers", strconv.Itoa(frameworkWorkers), "--log-level", "info", "--balance", balance}, s.flags...)
	if balance == "shared" {
		// A probe reaches one worker only through its own socket: on a
		// shared socket, guess with a delay instead.
		for i := 1; i < len(flags); i++ {
			if flags[i-1] == "--ready" && (flags[i] == "tcp" || strings.HasPrefix(flags[i], "http=")) {
				flags[i] = "delay=2s"
			}
		}
	}
	// Registered first, so it runs after the harness has stopped the master.
	t.Cleanup(func() { killMarked(marker) })
	m := startMasterWith(t, bin.handoff, []string{marker}, flags, s.command...)
	waitSupervising(t, m)
	m.waitServing(1, frameworkWorkers)
	addr := m.addr()
	body, err := get(addr, s.path)
	if err != nil || !strings.Contains(body, s.want) {
		t.Fatalf("first request: %q %v; want an answer with %q", body, err, s.want)
	}

	pace := frameworkPace(t)
	l := startStrictLoad(addr, s.path, s.want, frameworkClients, pace)
	defer l.stop()
	if !l.waitDone(100, 30*time.Second) {
		t.Fatalf("load is not getting answers: %s", l.summary())
	}
	reloads := frameworkReloads(t)
	for i := 1; i <= reloads; i++ {
		stdout, stderr, code := m.cli("reload", "--wait", "--timeout", "60s")
		if code != 0 {
			t.Fatalf("reload %d: exit %d: %s%s", i, code, stdout, stderr)
		}
		if !strings.Contains(stdout, fmt.Sprintf("generation %d serving", i+1)) {
			t.Fatalf("reload %d: output %q", i, stdout)
		}
		if s.generation {
			if body, err := get(addr, s.path); err != nil || field(body, "generation") != strconv.Itoa(i+1) {
				t.Fatalf("after reload %d: %q %v; want generation=%d", i, body, err, i+1)
			}
		}
		if !l.waitDone(50, 30*time.Second) {
			t.Fatalf("reload %d: load stalled: %s", i, l.summary())
		}
	}
	l.stop()
	total, failed := l.done.Load(), l.failed.Load()
	rate := "as fast as it can"
	if pace > 0 {
		rate = "at most one request per " + pace.String()
	}
	t.Logf("%s, --balance %s: %d of %d requests failed over %d reloads of %d workers (%d clients, each %s, a new connection per request, no retry)%s",
		s.name, balance, failed, total, reloads, frameworkWorkers, frameworkClients, rate, l.kindsText())
	// Steered, every server loses nothing: a worker is stopped only once
	// its own socket's queue has been empty a moment, so its shutdown
	// finds no connection it accepted and has not read. On a shared
	// socket, the racy ones may lose what their shutdown drops.
	if (s.racy == "" || balance != "shared") && failed > 0 {
		t.Errorf("%d of %d requests failed:\n%s", failed, total, l.summary())
	}
	if s.racy != "" && balance == "shared" {
		// Each retired worker can fail at most the requests in flight
		// when it stops: one per client.
		limit := int64(frameworkClients * frameworkWorkers * reloads)
		if failed > limit {
			t.Errorf("%d of %d requests failed, more than %d (%d clients × %d workers × %d reloads): %s\n%s",
				failed, total, limit, frameworkClients, frameworkWorkers, reloads, s.racy, l.summary())
		}
	}

	if stdout, stderr, code := m.cli("stop", "--wait"); code != 0 {
		t.Fatalf("stop: exit %d %s%s", code, stdout, stderr)
	}
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("master exited %d", code)
	}
	waitNoneMarked(t, marker, 10*time.Second)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is still in use after the stop: %v", addr, err)
	}
	ln.Close()
}

// waitSupervising waits until the master has started its first generation
// before the test asks it for its status. This works around a data race in
// the master that -race reports (and that makes the master exit 66, which
// runFramework checks): the control socket answers before
// workers.Supervisor.Run has set s.started without holding s.mu, which
// Status reads under it (workers/supervisor.go, workers/status.go). The
// log line comes after Run has taken and released s.mu, so a status
// request made after it is ordered after the write.
func waitSupervising(t *testing.T, m *master) {
	t.Helper()
	m.log.waitLine(t, 60*time.Second, "starting generation")
}

// strictLoad keeps clients busy that open a new connection for every
// request, send it once and never retry: every connect error, reset,
// short read, unexpected body and status other than 200 is a failure.
// Each client waits at least pace from one request to the next.
type strictLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	done, failed atomic.Int64
	mu           sync.Mutex
	kinds        map[string]int
	examples     []string // the first few failures
}

func startStrictLoad(addr, path, want string, clients int, pace time.Duration) *strictLoad {
	// Bounded in time even if a test forgets to stop it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l := &strictLoad{cancel: cancel, kinds: map[string]int{}}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				next := time.Now().Add(pace)
				l.record(strictRequest(addr, req, want))
				time.Sleep(time.Until(next))
			}
		}()
	}
	return l
}

// strictRequest makes one request on a new connection and says what went
// wrong, if anything.
func strictRequest(addr string, req []byte, want string) (kind string, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "connect", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(req); err != nil {
		return "write", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "no response", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return "short read", err
	case resp.StatusCode != http.StatusOK:
		return "status " + strconv.Itoa(resp.StatusCode), fmt.Errorf("%s: %q", resp.Status, body)
	case !bytes.Contains(body, []byte(want)):
		return "wrong body", fmt.Errorf("%q", body)
	}
	return "", nil
}

func (l *strictLoad) record(kind string, err error) {
	l.done.Add(1)
	if err == nil {
		return
	}
	l.failed.Add(1)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		kind += " (reset)"
	case errors.Is(err, syscall.ECONNREFUSED):
		kind += " (refused)"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		kind += " (EOF)"
	case errors.Is(err, os.ErrDeadlineExceeded):
		kind += " (timeout)"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kinds[kind]++
	if len(l.examples) < 10 {
		l.examples = append(l.examples, time.Now().Format("15:04:05.000000")+" "+kind+": "+err.Error())
	}
}

// stop ends the load and waits for its clients.
func (l *strictLoad) stop() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
}

// waitDone waits until n more requests have completed.
func (l *strictLoad) waitDone(n int64, timeout time.Duration) bool {
	target := l.done.Load() + n
	deadline := time.Now().Add(timeout)
	for l.done.Load() < target {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (l *strictLoad) kindsText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.kinds) == 0 {
		return ""
	}
	var parts []string
	for k, n := range l.kinds {
		parts = append(parts, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(parts)
	return "; " + strings.Join(parts, ", ")
}

func (l *strictLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d requests, %d failed; first failures:\n%s", l.done.Load(), l.failed.Load(), strings.Join(l.examples, "\n"))
}

// markedProcs lists the processes whose environment holds marker (a
// NAME=VALUE the test gave the master, which every worker and its children
// inherit), as "pid argv".
func markedProcs(marker string) []string {
	want := []byte(marker + "\x00")
	dirs, _ := os.ReadDir("/proc")
	var out []string
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		argv, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.TrimSpace(strings.ReplaceAll(string(argv), "\x00", " "))))
	}
	return out
}

// waitNoneMarked fails the test if a marked process outlives timeout.
func waitNoneMarked(t *testing.T, marker string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := markedProcs(marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left %s after the master stopped:\n%s", timeout, strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killMarked kills whatever marked process a failed test left behind.
func killMarked(marker string) {
	for _, p := range markedProcs(marker) {
		if pid, err := strconv.Atoi(strings.Fields(p)[0]); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// needExecutable returns the path of name or skips, naming the Debian
// package to install.
func needExecutable(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	skipf(t, "%s not installed (apt-get install %s, or bash examples/install-runtimes.sh)", name, pkg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// needGunicorn returns gunicorn's path once it and the Python it runs on
// (its #! line) can import flask.
func needGunicorn(t *testing.T) string {
	t.Helper()
	gunicorn := needExecutable(t, "gunicorn", "gunicorn")
	py := "python3"
	if b, err := os.ReadFile(gunicorn); err == nil {
		if line, _, _ := strings.Cut(string(b), "\n"); strings.HasPrefix(line, "#!") {
			if f := strings.Fields(line[2:]); len(f) > 0 && !strings.HasSuffix(f[0], "/env") {
				py = f[0]
			}
		}
	}
	if err := exec.Command(py, "-c", "import flask").Run(); err != nil {
		skipf(t, "flask not importable by gunicorn's %s (apt-get install python3-flask, or bash examples/install-runtimes.sh)", py)
	}
	return gunicorn
}

// needPythonModule returns a python3 that can import module: the one on
// PATH, else Debian's /usr/bin/python3 (a pyenv or venv python3 on PATH
// does not see Debian's packages).
func needPythonModule(t *testing.T, module, pkg string) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import "+module).Run() == nil {
			if p, err := exec.LookPath(py); err == nil {
				return p
			}
		}
	}
	skipf(t, "no python3 can import %s (apt-get install %s, or bash examples/install-runtimes.sh)", module, pkg)
	return ""
}

// needPuma returns puma's path once the sd_notify gem is there too:
// without it puma never sends READY=1.
func needPuma(t *testing.T) string {
	t.Helper()
	puma := needExecutable(t, "puma", "puma")
	if err := exec.Command("ruby", "-e", "require 'sd_notify'").Run(); err != nil {
		skipf(t, "the sd_notify gem is missing, without which puma never sends READY=1 (apt-get install ruby-sd-notify, or bash examples/install-runtimes.sh)")
	}
	return puma
}

// needNodeModule returns node's path and the handoff readiness flags for
// the apps in examples/node, once npm ci has installed module there.
func needNodeModule(t *testing.T, module string) (string, []string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		skipf(t, "node not installed")
	}
	if _, err := os.Stat(filepath.Join("examples/node/node_modules", module, "package.json")); err != nil {
		skipf(t, "%s not installed in examples/node (cd examples/node && npm ci, or bash examples/install-runtimes.sh)", module)
	}
	// The apps send READY=1 through systemd-notify; without it, a worker
	// alive for 3 s counts as ready.
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		return node, []string{"--ready", "delay=3s"}
	}
	return node, nil
}
