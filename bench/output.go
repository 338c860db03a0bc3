package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"
)

// The output part: what forwarding workers' output costs the master
// (issue 10). One worker writes outputRate lines a second of 100 bytes to
// its stdout; the master runs with --worker-output inherit (the worker
// writes straight to the master's stdout: the master does nothing),
// prefix and json. The sides take turns, round by round; the figure is
// the master's CPU time per second of it (its own process, not the
// worker's), and per line.

const outputRate = 10000

func (b *bench) output(ctx context.Context) section {
	sec := section{
		Title:  "10. Forwarding workers' output: the master's CPU",
		Intro:  []string{fmt.Sprintf("One worker (bench/logger) writes %d lines a second of 100 bytes to its stdout, steadily, for %s per round; %d rounds, the modes taking turns. The master's CPU time is its own (utime+stime, not the worker's), per second of the run and per line forwarded. With inherit the worker writes to the master's own stdout (a pipe to the bench here, as to journald under systemd) and the master does nothing; prefix and json forward every line through a pipe of the master's.", outputRate, b.cfg.duration, b.cfg.rounds)},
		Header: []string{"--worker-output", "master CPU (% of one core)", "µs per line", "lines received"},
	}
	bin, err := b.buildLogger(ctx)
	if err != nil {
		b.fail("output: %v", err)
		sec.Notes = append(sec.Notes, "Did not run: "+err.Error())
		return sec
	}
	modes := []string{"inherit", "prefix", "json"}
	cpu := map[string][]float64{}
	lines := map[string][]float64{}
	for round := 0; round < b.cfg.rounds && ctx.Err() == nil; round++ {
		for _, mode := range modes {
			c, n, err := b.outputRun(ctx, bin, mode)
			if err != nil {
				b.fail("output: %s: %v", mode, err)
				continue
			}
			cpu[mode] = append(cpu[mode], c)
			lines[mode] = append(lines[mode], n)
		}
	}
	for _, mode := range modes {
		if len(cpu[mode]) == 0 {
			sec.Rows = append(sec.Rows, []string{mode, "did not run", "", ""})
			continue
		}
		c := median(cpu[mode])
		perLine := c / 100 / float64(outputRate) * 1e6 // c is % of a core
		sec.Rows = append(sec.Rows, []string{mode, fmt.Sprintf("%.1f %%", c), fmt.Sprintf("%.2f", perLine), fmt.Sprintf("%.0f /s", median(lines[mode]))})
	}
	return sec
}

// buildLogger builds bench/logger into the scratch directory.
func (b *bench) buildLogger(ctx context.Context) (string, error) {
	out := filepath.Join(b.e.dir, "logger")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./logger")
	cmd.Dir = filepath.Join(b.e.root, "bench")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./logger: %w\n%s", err, o)
	}
	return out, nil
}

// outputRun runs the logger under handoff with one --worker-output mode
// and returns the master's CPU in % of a core, and the lines per second
// that reached the master's output.
func (b *bench) outputRun(ctx context.Context, logger, mode string) (cpu, linesPerSec float64, err error) {
	name := b.e.name("handoff-output")
	ctl := filepath.Join(b.e.dir, name+".sock")
	p, err := b.e.reg.start(name, []string{b.e.handoff, "run", "--workers", "1", "--worker-output", mode, "--control", ctl, "--", logger},
		[]string{fmt.Sprintf("LOGGER_RATE=%d", outputRate), "LOGGER_LEN=100"})
	if err != nil {
		return 0, 0, err
	}
	h := &handoffServer{e: b.e, lbl: "handoff + logger (" + mode + ")", p: p, ctl: ctl}
	defer h.stop()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if st, err := h.status(ctx); err == nil && st.Serving {
			break
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return 0, 0, fmt.Errorf("not serving within 30s: %s", p.tail(10))
		}
		pause(ctx, 20*time.Millisecond)
	}
	pause(ctx, 500*time.Millisecond) // past the start
	pid := h.masterPID()
	c0, err := processCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	n0, t0 := h.p.lines.total(), time.Now()
	pause(ctx, b.cfg.duration)
	c1, err := processCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	n1, el := h.p.lines.total(), time.Since(t0)
	return 100 * (c1 - c0).Seconds() / el.Seconds(), float64(n1-n0) / el.Seconds(), nil
}
