//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// progressLine is one line of 'reload --wait --json'.
type progressLine struct {
	Phase      string                `json:"phase"`
	Generation int                   `json:"generation"`
	Ready      *int                  `json:"ready"`
	Workers    int                   `json:"workers"`
	Text       string                `json:"text"`
	Result     *workers.ReloadResult `json:"result"`
}

// 'reload --wait' reports the phases while it waits: piped, one line per
// phase; with --json, one object per phase and the result; on a
// terminal, one line per phase updated in place. The new generation is
// held in starting by its gate until the report shows it, and the
// probation (--min-uptime) is long enough to be seen between two polls.
func TestReloadWaitProgress(t *testing.T) {
	m, ready := gatedMaster(t, "--min-uptime", "3s")

	// Piped.
	os.Remove(ready)
	out := newLogBuf()
	done := reloadInBackground(m, out, "--wait")
	out.waitText(t, 60*time.Second, "starting 0/2 ready\n")
	os.WriteFile(ready, nil, 0o644)
	r := <-done
	if r.code != 0 {
		t.Fatalf("reload --wait: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[len(lines)-2], "done in ") || !strings.HasPrefix(lines[len(lines)-1], "generation 2 serving after ") {
		t.Fatalf("reload --wait piped:\n%s", r.stdout)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		word, _, _ := strings.Cut(l, " ")
		if seen[word] && (word == "starting" || word == "probation") {
			t.Errorf("phase %s reported twice:\n%s", word, r.stdout)
		}
		seen[word] = true
	}
	if !seen["starting"] || !seen["probation"] {
		t.Errorf("phases seen %v, want starting and probation:\n%s", seen, r.stdout)
	}

	// JSON lines.
	m.waitServing(2, 2)
	os.Remove(ready)
	out = newLogBuf()
	done = reloadInBackground(m, out, "--wait", "--json")
	out.waitText(t, 60*time.Second, `"phase":"starting"`)
	os.WriteFile(ready, nil, 0o644)
	r = <-done
	if r.code != 0 {
		t.Fatalf("reload --wait --json: exit %d: %v\n%s", r.code, r.err, r.stdout)
	}
	var phases []string
	var last progressLine
	for _, l := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		var p progressLine
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		if p.Phase != "done" && (p.Generation != 3 || p.Ready == nil || p.Workers != 2 || p.Text == "") {
			t.Errorf("phase line lacks fields: %s", l)
		}
		phases = append(phases, p.Phase)
		last = p
	}
	if len(phases) < 3 || phases[0] != "starting" || !slices.Contains(phases, "probation") || last.Phase != "done" ||
		last.Result == nil || !last.Result.OK || last.Result.Generation != 3 {
		t.Fatalf("phases %v, last %+v:\n%s", phases, last, r.stdout)
	}

	// On a terminal.
	m.waitServing(3, 2)
	os.Remove(ready)
	p := startPty(t, "reload", "--wait", "--control", m.ctl)
	p.screen.waitText(t, 60*time.Second, "starting 0/2 ready")
	os.WriteFile(ready, nil, 0o644)
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("reload --wait on a terminal: exit %d", code)
	}
	screen := p.screen.String()
	for _, want := range []string{"\r\x1b[Kstarting 0/2 ready", "\r\x1b[Kprobation ", "\r\x1b[Kdone in ", "generation 4 serving after "} {
		if !strings.Contains(screen, want) {
			t.Errorf("terminal lacks %q: %q", want, screen)
		}
	}
	if n := strings.Count(screen, "\n"); n > 5 {
		t.Errorf("%d lines on the terminal, want one per phase and the result: %q", n, screen)
	}
}

// The first-hour fixes: scale +N, -N and auto; check FILE; check prints
// every problem; status names the version and what "no reload" means.
func TestScaleRelativeAndAuto(t *testing.T) {
	m := startMaster(t, []string{"--workers", "2"}, bin.testapp, "-mode", "serve")
	m.waitServing(1, 2)
	for _, c := range []struct {
		arg  string
		want int
	}{{"+1", 3}, {"-2", 1}, {"+1", 2}} {
		stdout, stderr, code := m.cli("scale", c.arg)
		if code != 0 || !strings.HasPrefix(stdout, fmt.Sprintf("scaling to %d workers (", c.want)) {
			t.Fatalf("scale %s: exit %d, stdout %q, stderr %q", c.arg, code, stdout, stderr)
		}
		m.waitServing(1, c.want)
	}
	// Below one worker: refused, nothing sent.
	if _, stderr, code := m.cli("scale", "-2"); code != 2 || !strings.Contains(stderr, "runs 2 workers; 0 is not from 1 to") {
		t.Fatalf("scale -2 of 2: exit %d, stderr %q", code, stderr)
	}
	auto := runtime.GOMAXPROCS(0)
	stdout, stderr, code := m.cli("scale", "auto")
	if code != 0 || !strings.HasPrefix(stdout, fmt.Sprintf("scaling to %d workers (auto: ", auto)) {
		t.Fatalf("scale auto: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	m.waitServing(1, auto)
	// The error for 0 names every form that works.
	if _, stderr, code := m.cli("scale", "0"); code != 2 || !strings.Contains(stderr, "want auto or a number") || !strings.Contains(stderr, "+N/-N") {
		t.Fatalf("scale 0: exit %d, stderr %q", code, stderr)
	}

	// status: the master's version, and no reload since it started.
	stdout, _, _ = m.cli("status")
	if !strings.Contains(stdout, "(handoff ") || !strings.Contains(stdout, "last reload: none since this master started") {
		t.Fatalf("status:\n%s", stdout)
	}
}

func TestCheckPositional(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeConfig(t, dir, "good.hcl", `command = ["`+bin.hello1+`"]
listen "http" { address = "tcp://127.0.0.1:0" }
`)
	if stdout, stderr, code := runHandoff(t, "check", good); code != 0 || stdout != "config "+good+" ok\n" {
		t.Errorf("check FILE: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, stderr, code := runHandoff(t, "check", good, "--config", filepath.Join(dir, "other.hcl")); code != 2 || !strings.Contains(stderr, "give one") {
		t.Errorf("check FILE --config OTHER: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := runHandoff(t, "check"); code != 2 || !strings.Contains(stderr, "(handoff check FILE)") {
		t.Errorf("check: exit %d, stderr %q", code, stderr)
	}
	// Every problem config.Load reports is printed, one line each.
	bad := writeConfig(t, dir, "bad.hcl", `command = ["`+bin.hello1+`"]
workers = 0
balance = "fair"
ready_timeout = "soon"
`)
	_, stderr, code := runHandoff(t, "check", bad)
	if code != 1 || strings.Count(stderr, "handoff: "+bad+":") != 3 {
		t.Errorf("check with 3 problems: exit %d, stderr:\n%s", code, stderr)
	}
}

// A rollback is reported as the last phase, with its reason, and exits
// 1 as before; stderr keeps its one line.
func TestReloadWaitProgressRollback(t *testing.T) {
	m, ready := gatedMaster(t, "--ready-timeout", "1s")
	os.Remove(ready) // the new workers never get ready
	stdout, stderr, code := m.cli("reload", "--wait")
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stdout, "rolled back: ") ||
		!strings.Contains(stdout, "not ready within 1s") {
		t.Fatalf("reload --wait rolled back: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	m.waitServing(1, 2)
	stdout, _, code = m.cli("reload", "--wait", "--json")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	var last progressLine
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || code != 1 {
		t.Fatalf("reload --wait --json rolled back: exit %d, %v:\n%s", code, err, stdout)
	}
	if last.Phase != "rolled back" || last.Result == nil || last.Result.OK || !strings.Contains(last.Result.Error, "not ready within 1s") {
		t.Fatalf("last line %+v:\n%s", last, stdout)
	}
}
