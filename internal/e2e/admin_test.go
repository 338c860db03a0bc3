//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/handoff-dev/handoff/workers"
)

// skipWithoutAdmin skips until 'handoff run' has the --admin flag.
func skipWithoutAdmin(t *testing.T) {
	t.Helper()
	out, _ := exec.Command(bin.handoff, "run", "-h").CombinedOutput()
	if !strings.Contains(string(out), "-admin") {
		skipf(t, "handoff run has no --admin flag yet ('handoff run -h' does not list it)")
	}
}

// adminGet does one GET on a new connection to the admin endpoint.
func adminGet(addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// adminScrape fetches /metrics and parses it as Prometheus does.
func adminScrape(addr string) (map[string]*dto.MetricFamily, error) {
	code, body, err := adminGet(addr, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(body))
}

// statusFamilies are the metric families taken from a status snapshot,
// compared whole (no sample missing, none extra).
var statusFamilies = []string{
	"handoff_master_info", "handoff_master_phase", "handoff_serving_generation", "handoff_reloading_generation",
	"handoff_reload_pending", "handoff_generation_phase", "handoff_workers", "handoff_worker_info",
	"handoff_worker_resident_memory_bytes", "handoff_worker_cpu_seconds_total", "handoff_worker_restarts_total",
	"handoff_reloads_total", "handoff_rollbacks_total", "handoff_last_reload_success", "handoff_last_reload_generation",
	"handoff_listener_info", "handoff_listener_queue_connections",
}

// expectedSamples is what /metrics must show for st: sample key (name
// and sorted labels) to value, for statusFamilies.
func expectedSamples(st workers.Status) map[string]float64 {
	out := map[string]float64{}
	add := func(name string, v float64, labels ...string) { out[sampleKey(name, labels...)] = v }
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	add("handoff_master_info", 1, "pid", strconv.Itoa(st.PID), "version", st.Version)
	for _, p := range []workers.MasterPhase{workers.MasterStarting, workers.MasterServing, workers.MasterUpgrading, workers.MasterHandedOver, workers.MasterStopping} {
		add("handoff_master_phase", b2f(p == st.Phase), "phase", string(p))
	}
	serving := 0
	if st.Serving {
		serving = st.Generation
	}
	add("handoff_serving_generation", float64(serving))
	add("handoff_reloading_generation", float64(st.Reloading))
	add("handoff_reload_pending", b2f(st.ReloadPending))
	for _, g := range st.Generations {
		add("handoff_generation_phase", 1, "generation", strconv.Itoa(g.Generation), "phase", string(g.Phase))
	}
	byState := map[[2]string]int{}
	for _, w := range st.Workers {
		slot, gen, pid := strconv.Itoa(w.Slot), strconv.Itoa(w.Generation), strconv.Itoa(w.PID)
		byState[[2]string{string(w.State), gen}]++
		add("handoff_worker_info", 1, "slot", slot, "generation", gen, "pid", pid, "state", string(w.State))
		if w.PID != 0 && (w.RSS != 0 || w.CPU != 0) {
			add("handoff_worker_resident_memory_bytes", float64(w.RSS), "slot", slot, "generation", gen, "pid", pid)
			add("handoff_worker_cpu_seconds_total", w.CPU, "slot", slot, "generation", gen, "pid", pid)
		}
		for name, n := range w.Queue {
			key := sampleKey("handoff_listener_queue_connections", "listener", name, "balance", listenerBalance(st, name), "slot", slot, "bank", strconv.Itoa(w.Bank))
			if _, dup := out[key]; !dup {
				out[key] = float64(n)
			}
		}
	}
	for k, n := range byState {
		add("handoff_workers", float64(n), "state", k[0], "generation", k[1])
	}
	for _, r := range []string{"failed", "killed", "exited", "memory"} {
		add("handoff_worker_restarts_total", float64(st.Counters.Restarts[r]), "reason", r)
	}
	for r, n := range st.Counters.Restarts {
		add("handoff_worker_restarts_total", float64(n), "reason", r)
	}
	for _, r := range []string{"ok", "failed", "master_ok", "master_failed"} {
		add("handoff_reloads_total", float64(st.Counters.Reloads[r]), "result", r)
	}
	for r, n := range st.Counters.Reloads {
		add("handoff_reloads_total", float64(n), "result", r)
	}
	add("handoff_rollbacks_total", float64(st.Counters.Reloads["failed"]), "kind", "workers")
	add("handoff_rollbacks_total", float64(st.Counters.Reloads["master_failed"]), "kind", "master")
	if r := st.LastReload; r != nil {
		add("handoff_last_reload_success", b2f(r.OK))
		add("handoff_last_reload_generation", float64(r.Generation))
	}
	for _, l := range st.Listeners {
		add("handoff_listener_info", 1, "listener", l.Name, "network", l.Network, "addr", l.Addr, "balance", l.Balance, "mechanism", l.Mechanism, "selection", l.Selection)
	}
	return out
}

func listenerBalance(st workers.Status, name string) string {
	for _, l := range st.Listeners {
		if l.Name == name {
			return l.Balance
		}
	}
	return ""
}

func sampleKey(name string, labels ...string) string {
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// scrapedSamples are the samples of statusFamilies in fams, less the
// accept queues of shared listeners (measured by the endpoint itself:
// status has no number for them).
func scrapedSamples(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, name := range statusFamilies {
		for _, m := range fams[name].GetMetric() {
			var labels []string
			shared := false
			for _, l := range m.Label {
				labels = append(labels, l.GetName(), l.GetValue())
				shared = shared || (l.GetName() == "balance" && l.GetValue() == "shared")
			}
			if shared && name == "handoff_listener_queue_connections" {
				continue
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.Counter.GetValue()
			}
			out[sampleKey(name, labels...)] = v
		}
	}
	return out
}

// statusJSON runs 'handoff status --json'.
func (m *master) statusJSON() (workers.Status, error) {
	var st workers.Status
	stdout, stderr, code := m.cli("status", "--json")
	if code != 0 {
		return st, fmt.Errorf("status --json: exit %d: %s", code, stderr)
	}
	err := json.Unmarshal([]byte(stdout), &st)
	return st, err
}

// checkMetricsMatchStatus compares /metrics with 'status --json' taken
// just before and just after: once both statuses agree (nothing changed
// in between), the scrape must show exactly what they show.
func checkMetricsMatchStatus(t *testing.T, m *master, addr string) {
	t.Helper()
	var diffs []string
	for try := 0; try < 50; try++ {
		before, err := m.statusJSON()
		if err != nil {
			t.Fatal(err)
		}
		fams, err := adminScrape(addr)
		if err != nil {
			t.Fatal(err)
		}
		after, err := m.statusJSON()
		if err != nil {
			t.Fatal(err)
		}
		want := expectedSamples(before)
		if !sameSamples(want, expectedSamples(after)) {
			continue // the state moved during the scrape: again
		}
		got := scrapedSamples(fams)
		diffs = diffs[:0]
		for k, v := range want {
			if g, ok := got[k]; !ok {
				diffs = append(diffs, "missing "+k)
			} else if g != v {
				diffs = append(diffs, fmt.Sprintf("%s = %v, status says %v", k, g, v))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diffs = append(diffs, "extra "+k)
			}
		}
		if len(diffs) > 0 {
			sort.Strings(diffs)
			t.Fatalf("/metrics differs from status --json:\n\t%s", strings.Join(diffs, "\n\t"))
		}
		return
	}
	t.Fatal("status --json never stayed still across a scrape in 50 tries")
}

func sameSamples(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	want := sampleKey(name, labels...)
	for k, v := range scrapedSamplesOf(fams, name) {
		if k == want {
			return v
		}
	}
	return -1
}

func scrapedSamplesOf(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		var labels []string
		for _, l := range m.Label {
			labels = append(labels, l.GetName(), l.GetValue())
		}
		switch {
		case m.Counter != nil:
			out[sampleKey(name, labels...)] = m.Counter.GetValue()
		case m.Histogram != nil:
			out[sampleKey(name, labels...)] = float64(m.Histogram.GetSampleCount())
		default:
			out[sampleKey(name, labels...)] = m.GetGauge().GetValue()
		}
	}
	return out
}

// socketInodes are the inodes of the sockets process pid has open.
func socketInodes(pid int) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			out[l] = true
		}
	}
	return out
}

// listeningInode is the socket inode listening on addr (host:port), from
// /proc/net/tcp.
func listeningInode(t *testing.T, addr string) string {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, _ := strings.Cut(f[1], ":")
		if v, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(v) == p {
			return "socket:[" + f[9] + "]"
		}
	}
	t.Fatalf("nothing listens on %s", addr)
	return ""
}

// TestAdminEndpoint runs a master with --admin: /metrics equals 'status
// --json' through a kill and a reload, the admin socket is not in any
// worker, and on SIGTERM /readyz answers 503 before any worker gets its
// stop signal (each worker asks /readyz first thing on SIGTERM).
func TestAdminEndpoint(t *testing.T) {
	t.Parallel()
	skipWithoutAdmin(t)
	start := time.Now()
	addr := freePort(t)
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	app := filepath.Join(dir, "app")
	install(t, bin.testapp, app)
	m := startMaster(t, []string{"--admin", addr, "--workers", "2"}, app, "-mode", "probe", "-probe", "http://"+addr+"/readyz", "-probe-out", probe)
	st := m.waitServing(1, 2)

	if code, body, err := adminGet(addr, "/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz while serving: %d %q %v", code, body, err)
	}
	if code, body, err := adminGet(addr, "/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz while serving: %d %q %v", code, body, err)
	}
	checkMetricsMatchStatus(t, m, addr)

	// The admin socket stays in the master.
	inode := listeningInode(t, addr)
	if !socketInodes(st.PID)[inode] {
		t.Errorf("the master (pid %d) does not hold the admin socket %s", st.PID, inode)
	}
	for _, w := range st.Workers {
		if socketInodes(w.PID)[inode] {
			t.Errorf("worker pid %d holds the admin socket %s", w.PID, inode)
		}
	}

	// A worker killed from outside, then a reload: the counters move,
	// and the metrics follow.
	syscall.Kill(st.Workers[0].PID, syscall.SIGKILL)
	m.waitStatus(30*time.Second, "the killed worker replaced", func(s workers.Status) bool {
		return s.Counters.Restarts["killed"]+s.Counters.Restarts["failed"] == 1 && countState(s, 1, workers.Ready) == 2
	})
	checkMetricsMatchStatus(t, m, addr)
	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload --wait: exit %d: %s", code, stderr)
	}
	m.waitServing(2, 2)
	checkMetricsMatchStatus(t, m, addr)
	fams, err := adminScrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	if n := metricValue(fams, "handoff_reload_duration_seconds", "result", "ok"); n != 1 {
		t.Errorf("handoff_reload_duration_seconds{result=ok} has %v observations after one reload, want 1", n)
	}
	if n := metricValue(fams, "handoff_reload_time_to_serving_seconds", "result", "ok"); n != 1 {
		t.Errorf("handoff_reload_time_to_serving_seconds{result=ok} has %v observations after one reload, want 1", n)
	}
	if n := metricValue(fams, "handoff_control_requests_total", "command", "reload", "result", "ok"); n != 1 {
		t.Errorf("handoff_control_requests_total{command=reload,result=ok} = %v after one reload --wait, want 1", n)
	}
	if n := metricValue(fams, "handoff_control_requests_total", "command", "status", "result", "ok"); n < 1 {
		t.Errorf("handoff_control_requests_total{command=status,result=ok} = %v after status requests, want some", n)
	}
	if v := metricValue(fams, "handoff_ready"); v != 1 {
		t.Errorf("handoff_ready = %v while serving, want 1", v)
	}

	// Stop: each worker, on its SIGTERM, asks /readyz before anything
	// else. It must already say 503.
	m.cmd.Process.Signal(syscall.SIGTERM)
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("master exited %d", code)
	}
	for slot := 0; slot < 2; slot++ {
		b, err := os.ReadFile(fmt.Sprintf("%s.%d", probe, slot))
		if err != nil {
			t.Errorf("worker in slot %d wrote no probe result: %v", slot, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != "503" {
			t.Errorf("worker in slot %d, on its SIGTERM, got /readyz %s, want 503 (the endpoint must say so before any worker is stopped, and answer while workers drain)", slot, got)
		}
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}

// TestAdminMasterUpgrade: across a master self-upgrade the admin
// endpoint never refuses a connection nor says "not ready", and ends up
// answering for the new master.
func TestAdminMasterUpgrade(t *testing.T) {
	t.Parallel()
	skipWithoutAdmin(t)
	addr := freePort(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "handoff")
	install(t, bin.handoff, exe)
	m := startMasterWith(t, exe, nil, []string{"--admin", addr, "--workers", "2"}, bin.hello1)
	before := m.waitServing(1, 2)
	m.handsOver = true

	var (
		mu    sync.Mutex
		fails []string
		pids  = map[string]int{}
	)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			fams, err := adminScrape(addr)
			code, body, rerr := adminGet(addr, "/readyz")
			mu.Lock()
			if err != nil {
				fails = append(fails, time.Now().Format("15:04:05.000")+" /metrics: "+err.Error())
			} else {
				for k := range scrapedSamplesOf(fams, "handoff_master_info") {
					pids[k]++
				}
			}
			switch {
			case rerr != nil:
				fails = append(fails, time.Now().Format("15:04:05.000")+" /readyz: "+rerr.Error())
			case code != 200 && !strings.Contains(body, "handed over"):
				// A master that is still starting must not answer while
				// the other serves. (The old master may answer 503
				// "handed over" to a request it accepted just before.)
				fails = append(fails, fmt.Sprintf("/readyz: %d %s", code, strings.TrimSpace(body)))
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	install(t, bin.handoff2, exe)
	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("master upgrade: exit %d: %s", code, stderr)
	}
	next := m.waitStatus(60*time.Second, "a new master serving", func(st workers.Status) bool {
		return st.PID != before.PID && st.Serving && len(st.Workers) == 2
	})
	t.Cleanup(func() { stopPid(next.PID) })
	newKey := sampleKey("handoff_master_info", "pid", strconv.Itoa(next.PID), "version", "two")
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := pids[newKey]
		mu.Unlock()
		if n >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin endpoint never answered for the new master (%s); answers: %v", newKey, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := m.waitExit(60 * time.Second); code != 0 {
		t.Fatalf("old master exited %d", code)
	}
	close(stop)
	<-done
	if len(fails) > 0 {
		t.Errorf("%d requests failed across the master upgrade:\n\t%s", len(fails), strings.Join(fails, "\n\t"))
	}
	if inode := listeningInode(t, addr); !socketInodes(next.PID)[inode] {
		t.Errorf("the new master does not hold the admin socket %s", inode)
	}
	t.Logf("scrapes answered by master: %v", pids)
}
