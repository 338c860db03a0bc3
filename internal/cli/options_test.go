//go:build linux

package cli

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/upgrade"
)

// The options the master gets from flags and a file, and from the file
// again at a reload.
func TestParseRunOptions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.hcl")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`command = ["/bin/sh", "-c", "exec sleep 100"]
workers = 3
min_uptime = "0"
ready = "delay=2s"
listen "http" { address = "tcp://127.0.0.1:0" }
listen "api" {
  address = "unix://` + dir + `/api.sock"
  mode = "0660"
}
environment = { B = "2" }
admin = "127.0.0.1:9100"
`)
	o, err := parseRun([]string{"--config", path, "--env", "A=1", "--max-memory", "1GiB", "--log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Workers != 3 || o.WorkersAuto || o.MinUptime != 0 || o.Ready.Mode != config.ReadyDelay || o.Ready.Delay != 2*time.Second ||
		o.MaxMemory != 1<<30 || o.LogLevel != "debug" || o.Admin != "127.0.0.1:9100" || o.Path != path ||
		!slices.Equal(o.Environment, []string{"A=1", "B=2"}) || !slices.Equal(o.Command, []string{"/bin/sh", "-c", "exec sleep 100"}) {
		t.Errorf("options %+v", o)
	}
	wantSpecs := []upgrade.Spec{{Name: "http", Network: "tcp", Address: "127.0.0.1:0"}, {Name: "api", Network: "unix", Address: dir + "/api.sock"}}
	if !slices.Equal(specsOf(o), wantSpecs) || len(o.Listen) != 2 || o.Listen[1].Mode != 0o660 || !o.Listen[1].HasMode || o.Listen[1].UID != -1 {
		t.Errorf("specs %+v listen %+v", specsOf(o), o.Listen)
	}
	if len(o.Warnings) != 0 {
		t.Errorf("warnings %q", o.Warnings)
	}

	// The default minimum uptime is 1s, not "none".
	if d, err := parseRun([]string{"--", "/bin/sh"}); err != nil || d.MinUptime != time.Second || d.Balance != "steer" || d.SteerBPF != "auto" {
		t.Errorf("defaults: %+v, %v", d, err)
	}

	// A reload reads the file again, with the same flags over it.
	write(`command = ["/bin/sh", "-c", "exec sleep 200"]
workers = 5
listen "http" { address = "tcp://127.0.0.1:0" }
admin = "127.0.0.1:9200"
log_level = "error"
`)
	next, warnings, err := config.Reload(o)
	if err != nil {
		t.Fatal(err)
	}
	if next.Workers != 5 || next.Command[2] != "exec sleep 200" || len(specsOf(next)) != 1 || next.MaxMemory != 1<<30 || next.LogLevel != "debug" ||
		next.Admin != "127.0.0.1:9100" || next.MinUptime != time.Second {
		t.Errorf("reloaded %+v", next)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `admin changed from "127.0.0.1:9100" to "127.0.0.1:9200"`) {
		t.Errorf("warnings %q", warnings)
	}
	// A broken file is rejected, with its positions.
	write("command = [\"/bin/sh\"]\nworkers = -1\n")
	_, _, err = config.Reload(o)
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), path+":2:11: workers = -1: want auto") {
		t.Errorf("broken file: %v", err)
	}
	// No listener is a warning for the master to log.
	n, err := parseRun([]string{"--", "/bin/sh"})
	if err != nil || len(n.Warnings) != 1 || !strings.Contains(n.Warnings[0], "workers get no sockets") {
		t.Errorf("no listener: %q, %v", n.Warnings, err)
	}
}

// The command after "--" reaches the options as it was given, flags
// that look like handoff's included, and the flags before it are parsed
// once: by the run command's own flag set.
func TestRunFlagsParsedOnce(t *testing.T) {
	args := []string{"--listen", "a=tcp://127.0.0.1:0", "--workers=2", "--listen", "b=udp://127.0.0.1:0", "--env", "X=a,b", "--", "/bin/sh", "-c", "--workers 9"}
	o, err := parseRun(args)
	if err != nil {
		t.Fatal(err)
	}
	if len(specsOf(o)) != 2 || o.Workers != 2 || !slices.Equal(o.Environment, []string{"X=a,b"}) || !slices.Equal(o.Command, []string{"/bin/sh", "-c", "--workers 9"}) {
		t.Errorf("parsed: %+v", o)
	}
}

func TestSuggestFlag(t *testing.T) {
	fs := newRunCmd("", io.Discard).Flags()
	for typed, want := range map[string]string{
		"worker": "workers", "wrokers": "workers", "drain": "drain-timeout", "ready-timout": "ready-timeout",
		"listne": "listen", "balanse": "balance", "x": "", "frobnicate": "", "ad": "", "confg": "config",
	} {
		if got := suggestFlag(fs, typed); got != want {
			t.Errorf("suggestFlag(%q) = %q, want %q", typed, got, want)
		}
	}
}

// parseRun parses the arguments of 'handoff run' as its command does:
// with the run flags, then config.Load.
func parseRun(args []string) (*config.Options, error) {
	fs := pflag.NewFlagSet("handoff run", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	rf := addRunFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, flagError(fs, err)
	}
	return config.Load(rf.config, rf.configFlags(fs, fs.Args()))
}

// specsOf lists the listeners' specs, in order.
func specsOf(o *config.Options) []upgrade.Spec {
	var specs []upgrade.Spec
	for _, l := range o.Listen {
		specs = append(specs, l.Spec)
	}
	return specs
}
