//go:build linux

// Package docker_test tests the repository's Dockerfile without a
// container engine: it builds the image's filesystem the way the
// Dockerfile says (build_test.go), checks its configuration, and runs it
// the way a container runtime would, in fresh pid, mount and network
// namespaces under chroot, as the image's user, with handoff as pid 1.
package docker_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/workers"

	"github.com/handoff-dev/handoff/internal/testutil"
)

const testVersion = "v0.0.0-imagetest"

// TestImage builds the image from ../../Dockerfile, checks what it
// promises (static binaries, non-root, no shell, handoff as the
// entrypoint), then runs it.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image's binaries: not in -short mode")
	}
	if os.Geteuid() != 0 {
		// COPY makes files owned by 0:0, which only root can do here.
		t.Skip("needs root: the emulated build makes files owned by root, and the run uses namespaces and chroot")
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		t.Skip("the build stage copies /etc/ssl/certs/ca-certificates.crt, which this host (standing in for the golang image) lacks")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	img, err := buildImage(ctx, repo, t.TempDir(), map[string]string{"VERSION": testVersion})
	if err != nil {
		t.Fatalf("building the image: %v", err)
	}
	t.Logf("emulated build took %v", time.Since(start).Round(time.Millisecond))

	t.Run("config", func(t *testing.T) { checkConfig(t, repo, img) })
	t.Run("files", func(t *testing.T) { checkFiles(t, img) })
	t.Run("run", func(t *testing.T) { runImage(t, img) })
}

// checkConfig checks the image's configuration against what the README
// and the orchestrator examples rely on.
func checkConfig(t *testing.T, repo string, img *image) {
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if want := "golang:" + string(m[1]); img.base["build"] != want {
		t.Errorf("build stage is FROM %s; go.mod says go %s, so want FROM %s", img.base["build"], m[1], want)
	}
	if v := runtime.Version(); !strings.HasPrefix(v, "go"+string(m[1])) {
		t.Logf("note: this host builds with %s, the image with golang:%s", v, m[1])
	}
	if final := img.base[fmt.Sprint(len(img.base)-1)]; final != "scratch" {
		t.Errorf("final stage is FROM %q, want scratch (unnamed, last)", final)
	}
	uid, gid, ok := strings.Cut(img.user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric, non-root uid (Kubernetes' runAsNonRoot checks it without a passwd lookup)", img.user)
	}
	if _, err := strconv.Atoi(gid); !ok || err != nil {
		t.Errorf("USER %q: want uid:gid, both numeric", img.user)
	}
	if img.stopSignal != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM (what handoff drains on)", img.stopSignal)
	}
	if !slices.Equal(img.entrypoint, []string{"/usr/local/bin/handoff", "run"}) {
		t.Errorf("ENTRYPOINT %q, want [/usr/local/bin/handoff run]", img.entrypoint)
	}
	sep := slices.Index(img.cmd, "--")
	if sep < 0 || sep == len(img.cmd)-1 {
		t.Fatalf("CMD %q: want flags, then --, then the app", img.cmd)
	}
	flags := img.cmd[:sep]
	if !hasFlag(flags, "--listen", "http=tcp://0.0.0.0:8080") {
		t.Errorf("CMD %q: want --listen http=tcp://0.0.0.0:8080", img.cmd)
	}
	if !hasFlag(flags, "--admin", "0.0.0.0:9100") {
		t.Errorf("CMD %q: want --admin 0.0.0.0:9100", img.cmd)
	}
	if i := slices.Index(flags, "--drain-timeout"); i < 0 || i+1 >= len(flags) {
		t.Errorf("CMD %q: want --drain-timeout (Docker kills 10 s after SIGTERM by default)", img.cmd)
	} else if d, err := time.ParseDuration(flags[i+1]); err != nil || d >= 10*time.Second {
		t.Errorf("CMD --drain-timeout %s: want under Docker's default stop timeout of 10s", flags[i+1])
	}
	if !slices.Contains(strings.Split(img.env["PATH"], ":"), "/usr/local/bin") {
		t.Errorf("ENV PATH=%q: want /usr/local/bin in it, so that 'docker exec NAME handoff ...' works", img.env["PATH"])
	}
	for _, p := range []string{"8080", "9100"} {
		if !slices.Contains(img.expose, p) {
			t.Errorf("EXPOSE %q lacks %s", img.expose, p)
		}
	}
	if img.labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("label org.opencontainers.image.version = %q, want the VERSION build argument %q", img.labels["org.opencontainers.image.version"], testVersion)
	}
	if img.labels["org.opencontainers.image.licenses"] != "Apache-2.0" {
		t.Errorf("label org.opencontainers.image.licenses = %q, want Apache-2.0 (LICENSE)", img.labels["org.opencontainers.image.licenses"])
	}
}

func hasFlag(args []string, name, value string) bool {
	for i, a := range args {
		if a == name+"="+value || (a == name && i+1 < len(args) && args[i+1] == value) {
			return true
		}
	}
	return false
}

// checkFiles checks the image's filesystem: static, stripped binaries,
// no shell, a /tmp every user may write to.
func checkFiles(t *testing.T, img *image) {
	for _, bin := range []string{"/usr/local/bin/handoff", img.cmd[slices.Index(img.cmd, "--")+1]} {
		checkStatic(t, filepath.Join(img.rootfs, bin))
	}
	for _, sh := range []string{"/bin/sh", "/bin/bash", "/usr/bin/sh", "/bin/busybox"} {
		if _, err := os.Lstat(filepath.Join(img.rootfs, sh)); err == nil {
			t.Errorf("%s is in the image; nothing should need a shell", sh)
		}
	}
	st, err := os.Stat(filepath.Join(img.rootfs, "tmp"))
	if err != nil {
		t.Fatalf("no /tmp in the image (the master makes its notify sockets there): %v", err)
	}
	if got := st.Mode() & (os.ModePerm | os.ModeSticky); got != os.ModePerm|os.ModeSticky {
		t.Errorf("/tmp has mode %v, want drwxrwxrwt", st.Mode())
	}
	passwd, err := os.ReadFile(filepath.Join(img.rootfs, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	uid, _, _ := strings.Cut(img.user, ":")
	if !regexp.MustCompile(`(?m)^[a-z]+:x:` + regexp.QuoteMeta(uid) + `:`).Match(passwd) {
		t.Errorf("/etc/passwd names no user %s:\n%s", uid, passwd)
	}
	out, err := exec.Command(filepath.Join(img.rootfs, "usr/local/bin/handoff"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Errorf("handoff version: %v, %q; want %s (the VERSION build argument, through -X main.version)", err, out, testVersion)
	}
}

// checkStatic fails unless path is a static ELF executable (no
// interpreter, no shared libraries) without a symbol table (-s -w).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static (CGO_ENABLED=0?)", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", path, libs)
	}
	if _, err := f.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
		t.Errorf("%s has a symbol table: want it stripped (-ldflags -s -w)", path)
	}
}

// container is the image running: unshare(1) started pid, mount and
// network namespaces, and its child, handoff, is their pid 1.
type container struct {
	t       *testing.T
	img     *image
	cmd     *exec.Cmd     // unshare
	exited  chan struct{} // closed once cmd has exited; then waitErr is set
	waitErr error
	pid     int // handoff, pid 1 inside, as this host sees it
	env     []string
	client  *http.Client
	output  *testutil.Buffer
}

// runImage runs the image as a container runtime would: fresh pid, mount
// and network namespaces (loopback up), the rootfs as root directory with
// /proc and a minimal /dev mounted, the image's USER and environment, and
// ENTRYPOINT+CMD as pid 1. It then does what the examples do: probes the
// app and the admin endpoints, runs 'handoff status' and 'handoff reload
// --wait' as 'docker exec' / 'kubectl exec' would, and stops the
// container with its STOPSIGNAL.
func runImage(t *testing.T, img *image) {
	for _, tool := range []string{"unshare", "nsenter", "chroot", "mount", "mknod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on this machine: %v", tool, err)
		}
	}
	argv := append(slices.Clone(img.entrypoint), img.cmd...)
	admin := adminSupported(t, filepath.Join(img.rootfs, "usr/local/bin/handoff"))
	if !admin {
		t.Log("this handoff has no --admin flag yet: running without it, and skipping the /readyz, /healthz and /metrics checks")
		if i := slices.Index(argv, "--admin"); i >= 0 && i+1 < len(argv) {
			argv = slices.Delete(argv, i, i+2)
		}
	}
	c := startContainer(t, img, argv)
	uid, _, _ := strings.Cut(img.user, ":")
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid)); err != nil || !regexp.MustCompile(`(?m)^Uid:\s+`+uid+`\s`).Match(st) {
		t.Errorf("handoff does not run as uid %s: %v\n%s", uid, err, st)
	}

	body := c.waitHTTP("http://127.0.0.1:8080/", func(b string) bool { return strings.HasPrefix(b, "pid=") })
	for _, want := range []string{"generation=1", "version=" + testVersion} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / = %q, want %s", body, want)
		}
	}
	// A worker answers before the whole generation is ready: wait for
	// the generation to serve.
	var st workers.Status
	for deadline := time.Now().Add(60 * time.Second); !st.Serving; {
		if time.Now().After(deadline) {
			t.Fatalf("handoff status: generation %d not serving after 60s\n%s", st.Generation, c.output)
		}
		out := c.exec("/usr/local/bin/handoff", "status", "--json")
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("handoff status --json: %v: %q", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.PID != 1 || st.Generation != 1 {
		t.Errorf("handoff status: pid %d, generation %d; want pid 1 (handoff is the container's init), generation 1", st.PID, st.Generation)
	}
	if admin {
		for _, p := range []string{"/readyz", "/healthz", "/metrics"} {
			if code, b := c.get("http://127.0.0.1:9100" + p); code != http.StatusOK {
				t.Errorf("GET :9100%s = %d %q, want 200", p, code, b)
			}
		}
	}
	// By name, through the image's PATH, as the README's 'docker exec
	// hello handoff reload --wait' does.
	out := c.exec("handoff", "reload", "--wait")
	t.Logf("handoff reload --wait: %s", bytes.TrimSpace(out))
	c.waitHTTP("http://127.0.0.1:8080/", func(b string) bool { return strings.Contains(b, "generation=2") })

	// docker stop: STOPSIGNAL to pid 1, which drains and exits 0.
	if err := syscall.Kill(c.pid, unix.SignalNum(img.stopSignal)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		if c.waitErr != nil {
			t.Errorf("handoff exited with %v after %s, want status 0\n%s", c.waitErr, img.stopSignal, c.output)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("handoff still running 60s after %s\n%s", img.stopSignal, c.output)
	}
}

// adminSupported says whether this handoff's 'run' has an --admin flag.
func adminSupported(t *testing.T, handoff string) bool {
	out, _ := exec.Command(handoff, "run", "-h").CombinedOutput()
	return regexp.MustCompile(`(?m)^\s*--?admin\b`).Match(out)
}

// startContainer starts argv as pid 1 of the container and waits until
// it is handoff (chroot has exec'd it).
func startContainer(t *testing.T, img *image, argv []string) *container {
	root := img.rootfs
	for _, d := range []string{"proc", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The shell runs on this host, in the new namespaces, before chroot:
	// it makes the /dev a runtime provides. handoff's workers need
	// /dev/null for stdin.
	// It runs with this host's PATH; env -i then gives chroot, and so
	// the container, only the container's environment.
	const setup = `set -e
r=$1; shift
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
mknod -m 666 "$r/dev/null" c 1 3
mknod -m 666 "$r/dev/zero" c 1 5
mknod -m 666 "$r/dev/full" c 1 7
mknod -m 666 "$r/dev/random" c 1 8
mknod -m 666 "$r/dev/urandom" c 1 9
exec "$@"`
	chroot, err := exec.LookPath("chroot")
	if err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, img: img, output: &testutil.Buffer{}}
	c.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=imagetest", "HOME=/"}
	for k, v := range img.env {
		c.env = append(c.env, k+"="+v)
	}
	args := []string{"--net", "--pid", "--mount", "--fork", "--kill-child",
		"--mount-proc=" + filepath.Join(root, "proc"), "/bin/sh", "-c", setup, "sh", root, "env", "-i"}
	args = append(args, dedupEnv(c.env)...)
	args = append(args, chroot, "--userspec="+img.user, root)
	args = append(args, argv...)
	c.cmd = exec.Command("unshare", args...)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	// Pdeathsig fires when the thread that forked exits, and inNetns
	// ends threads: start and wait on one locked thread of its own,
	// which lives as long as the container.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.exited = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A container left by a failed test: killing unshare kills its
		// child (--kill-child), pid 1, and with it the namespace.
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	handoff := filepath.Join(root, "usr/local/bin/handoff")
	for c.pid == 0 {
		select {
		case <-c.exited:
			t.Fatalf("the container exited before handoff started: %v\n%s", c.waitErr, c.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no handoff under unshare after 30s\n%s", c.output)
		}
		if pid := childOf(c.cmd.Process.Pid); pid > 0 {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == handoff {
				c.pid = pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	netns := fmt.Sprintf("/proc/%d/ns/net", c.pid)
	if err := inNetns(netns, loopbackUp); err != nil {
		t.Fatalf("bringing up lo in the container: %v", err)
	}
	c.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
				err = inNetns(netns, func() error {
					var d net.Dialer
					conn, err = d.DialContext(ctx, network, addr)
					return err
				})
				return conn, err
			},
		},
	}
	return c
}

// dedupEnv keeps the last value of each variable, as exec.Cmd does.
func dedupEnv(env []string) []string {
	seen := map[string]int{}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := seen[k]; ok {
			out[i] = kv
			continue
		}
		seen[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// childOf returns a child of pid, or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// get does one GET inside the container's network namespace.
func (c *container) get(url string) (int, string) {
	resp, err := c.client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// waitHTTP polls url until it answers 200 with a body ok accepts, and
// returns that body.
func (c *container) waitHTTP(url string, ok func(string) bool) string {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		code, body := c.get(url)
		if code == http.StatusOK && ok(body) {
			return body
		}
		last = fmt.Sprintf("%d %q", code, body)
		select {
		case <-c.exited:
			c.t.Fatalf("GET %s: the container exited: %v; last answer %s\n%s", url, c.waitErr, last, c.output)
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("GET %s: no expected answer within 60s; last: %s\n%s", url, last, c.output)
	return ""
}

// exec runs a command in the container as 'docker exec' does: in its
// namespaces and root directory, as the image's user, with its
// environment. It fails the test unless the command exits 0.
func (c *container) exec(argv ...string) []byte {
	c.t.Helper()
	uid, gid, _ := strings.Cut(c.img.user, ":")
	args := append([]string{"--target", strconv.Itoa(c.pid), "--mount", "--pid", "--net", "--root", "--wd",
		"--setuid", uid, "--setgid", gid, "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("exec %q: %v\n%s%s\ncontainer output:\n%s", argv, err, out, stderr.Bytes(), c.output)
	}
	return out
}

// inNetns runs fn on an OS thread moved into the network namespace at
// nsPath. Sockets fn makes belong to that namespace. The thread is never
// given back to the Go runtime (no UnlockOSThread), so it exits with the
// goroutine instead of running other goroutines in the wrong namespace.
func inNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// loopbackUp sets IFF_UP on lo, as container runtimes do.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}
