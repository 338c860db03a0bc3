package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each startup error gives one line on stderr naming the problem, exit 2
// for usage errors and 1 for runtime ones, before any worker starts.
func TestRunStartupErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	// A worker that would leave a trace if it ever started.
	marker := filepath.Join(dir, "started")
	trap := filepath.Join(dir, "trap.sh")
	os.WriteFile(trap, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	ctl := filepath.Join(dir, "ctl.sock")

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"port in use", []string{"--listen", "http=tcp://" + taken.Addr().String(), "--", trap}, 1, "already in use"},
		{"bad listen url", []string{"--listen", "http=tcp//127.0.0.1:1", "--", trap}, 2, "want SCHEME://ADDRESS"},
		{"bad scheme", []string{"--listen", "http=sctp://127.0.0.1:1", "--", trap}, 2, `unknown scheme "sctp"`},
		{"bad port", []string{"--listen", "http=tcp://127.0.0.1:http2x", "--", trap}, 2, "bad port"},
		{"no name", []string{"--listen", "tcp://127.0.0.1:1", "--", trap}, 2, "want NAME=SCHEME://ADDRESS"},
		{"duplicate name", []string{"--listen", "a=tcp://127.0.0.1:0", "--listen", "a=tcp://127.0.0.1:0", "--", trap}, 2, `name "a" used twice`},
		{"missing command", []string{"--listen", "http=tcp://127.0.0.1:0", "--", filepath.Join(dir, "nope")}, 1, "no such file or directory"},
		{"command not in PATH", []string{"--listen", "http=tcp://127.0.0.1:0", "--", "handoff-no-such-command"}, 1, "executable file not found"},
		{"not executable", []string{"--listen", "http=tcp://127.0.0.1:0", "--", notExec}, 1, "permission denied"},
		{"workers 0", []string{"--workers", "0", "--", trap}, 2, "--workers \"0\""},
		{"workers junk", []string{"--workers", "many", "--", trap}, 2, "--workers \"many\""},
		{"workers too many", []string{"--workers", "100000", "--", trap}, 2, "--workers \"100000\": want auto or a number from 1 to 1024"},
		{"bad min uptime", []string{"--min-uptime", "-1s", "--", trap}, 2, "--min-uptime -1s: must not be negative"},
		{"bad retire parallel", []string{"--retire-parallel", "0", "--", trap}, 2, "--retire-parallel 0"},
		{"unknown flag", []string{"--wrokers", "2", "--", trap}, 2, "flag provided but not defined: -wrokers"},
		{"no command", []string{"--listen", "http=tcp://127.0.0.1:0"}, 2, "no command given"},
		{"bad ready", []string{"--ready", "soon", "--", trap}, 2, `--ready "soon"`},
		{"bad signal", []string{"--stop-signal", "SIGNOPE", "--", trap}, 2, "unknown signal"},
		{"bad strategy", []string{"--reload-strategy", "yolo", "--", trap}, 2, "--reload-strategy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--control", ctl}, c.args...)
			stdout, stderr, code := runHandoff(t, args...)
			if code != c.code {
				t.Errorf("exit code %d, want %d; stderr %q", code, c.code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "handoff: ") || !strings.Contains(lines[0], c.msg) {
				t.Errorf("stderr %q: want one line 'handoff: …' containing %q", stderr, c.msg)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("a worker started despite the error")
			}
		})
	}
}

// Client commands with no master, or bad arguments, say so.
func TestClientErrors(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"status", "--control", ctl}, 1, "no handoff master at " + ctl},
		{[]string{"reload", "--wait", "--control", ctl}, 1, "no handoff master at"},
		{[]string{"stop", "--control", ctl}, 1, "no handoff master at"},
		{[]string{"status", "--jsn"}, 2, "flag provided but not defined"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
	} {
		_, stderr, code := runHandoff(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("handoff %v: exit %d stderr %q; want exit %d and one line with %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}
