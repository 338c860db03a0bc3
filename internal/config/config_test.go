package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/handoff-dev/handoff/workers"

	"github.com/handoff-dev/handoff/internal/testutil"
)

// root is the system as root sees it, whoever runs the tests, on a
// machine where "auto" means 2 workers.
var root = &system{euid: 0, egid: 0, autoWorkers: 2}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func flags(command []string, kv ...string) Flags {
	f := Flags{Values: map[string][]string{}, Command: command}
	for i := 0; i < len(kv); i += 2 {
		f.Values[kv[i]] = append(f.Values[kv[i]], kv[i+1])
	}
	return f
}

// problemsOf returns the lines of a Load error, failing if it is not an
// *Error.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want a *config.Error", err, err)
	}
	return ce.Problems
}

func TestDefaults(t *testing.T) {
	o, err := load("", flags([]string{"/bin/sh", "-c", "true"}), root)
	if err != nil {
		t.Fatal(err)
	}
	want := &Options{
		Command:        []string{"/bin/sh", "-c", "true"},
		Environment:    []string{},
		Workers:        2,
		WorkersAuto:    true,
		Ready:          Ready{Mode: ReadyNotify},
		ReadyTimeout:   60 * time.Second,
		DrainTimeout:   30 * time.Second,
		MinUptime:      time.Second,
		RetireParallel: 1,
		StopSignal:     syscall.SIGTERM,
		Strategy:       workers.Surge,
		Balance:        BalanceSteer,
		SteerBPF:       "auto",
		WorkerOutput:   OutputPrefix,
		HangTimeout:    5 * time.Second,
		StartAttempts:  5,
		HealthInterval: time.Second,
		HealthFailures: 3,
		LogFormat:      "text",
		LogLevel:       "info",
		Warnings:       []string{"no listen sockets configured: workers get no sockets (LISTEN_FDS=0)"},
		flags:          flags([]string{"/bin/sh", "-c", "true"}),
		autoWorkers:    2,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("got  %+v\nwant %+v", o, want)
	}
	// The defaults are the documented ones.
	for _, k := range Keys() {
		if k.Name == KeyMinUptime && k.Default != workers.DefaultMinUptime.String() {
			t.Errorf("min_uptime default %s, workers.DefaultMinUptime %s", k.Default, workers.DefaultMinUptime)
		}
	}
	// Under the journal, worker output is inherited.
	j := *root
	j.journal = true
	o, err = load("", flags([]string{"/bin/sh"}), &j)
	if err != nil || o.WorkerOutput != OutputInherit {
		t.Errorf("worker output under the journal %q, %v; want inherit", o.WorkerOutput, err)
	}
}

func TestEveryFlag(t *testing.T) {
	sock := filepath.Join(testutil.ShortDir(t), "a.sock")
	o, err := load("", flags([]string{"sh"},
		KeyListen, "http=tcp://127.0.0.1:0",
		KeyListen, "api=unix://"+sock+"?mode=0640&owner=nobody&group=nogroup",
		KeyWorkers, "3",
		KeyReady, "http=/healthz?deep=1",
		KeyReadyTimeout, "2m",
		KeyDrainTimeout, "5s",
		KeyMinUptime, "0",
		KeyRetireParallel, "2",
		KeyStopSignal, "quit",
		KeyReloadStrategy, "rolling",
		KeyBalance, "shared",
		KeySteerBPF, "cbpf",
		KeyEnvironment, "B=2",
		KeyEnvironment, "A=x=y",
		KeyUser, "nobody",
		KeyGroup, "65533",
		KeyWorkerOutput, "json",
		KeyMaxMemory, "1.5GiB",
		KeyAdmin, "localhost:9100",
		KeyControl, "/run/x/ctl.sock",
		KeyPIDFile, "/run/x.pid",
		KeyLogFormat, "json",
		KeyLogLevel, "debug",
	), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Listen) != 2 || o.Listen[0].Name != "http" || o.Listen[0].Network != "tcp" || o.Listen[0].HasMode || o.Listen[0].UID != -1 || o.Listen[0].GID != -1 {
		t.Errorf("listen[0] %+v", o.Listen)
	}
	if l := o.Listen[1]; l.Name != "api" || l.Network != "unix" || l.Address != sock || !l.HasMode || l.Mode != 0o640 ||
		l.Owner != "nobody" || l.UID != 65534 || l.Group != "nogroup" || l.GID != 65534 {
		t.Errorf("listen[1] %+v", l)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"workers", o.Workers, 3},
		{"auto", o.WorkersAuto, false},
		{"ready", o.Ready, Ready{Mode: ReadyHTTP, Path: "/healthz?deep=1"}},
		{"ready timeout", o.ReadyTimeout, 2 * time.Minute},
		{"drain", o.DrainTimeout, 5 * time.Second},
		{"min uptime", o.MinUptime, time.Duration(0)},
		{"retire", o.RetireParallel, 2},
		{"signal", o.StopSignal, syscall.SIGQUIT},
		{"strategy", o.Strategy, workers.Rolling},
		{"balance", o.Balance, BalanceShared},
		{"steer bpf", o.SteerBPF, "cbpf"},
		{"env", o.Environment, []string{"A=x=y", "B=2"}},
		{"run as", *o.RunAs, RunAs{User: "nobody", Group: "65533", UID: 65534, GID: 65533}},
		{"output", o.WorkerOutput, OutputJSON},
		{"memory", o.MaxMemory, int64(3 << 29)},
		{"admin", o.Admin, "localhost:9100"},
		{"control", o.Control, "/run/x/ctl.sock"},
		{"pid file", o.PIDFile, "/run/x.pid"},
		{"log", o.LogFormat + " " + o.LogLevel, "json debug"},
		{"warnings", len(o.Warnings), 0},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// Every flag mistake is one problem naming the flag and its value.
func TestFlagProblems(t *testing.T) {
	long := "/" + strings.Repeat("a", 120)
	for _, c := range []struct {
		kv      []string
		want    string
		runtime bool
	}{
		{[]string{KeyWorkers, "0"}, `--workers "0": want auto or a number from 1 to 1024`, false},
		{[]string{KeyWorkers, "1025"}, `--workers "1025": want auto`, false},
		{[]string{KeyWorkers, "two"}, `--workers "two": want auto`, false},
		{[]string{KeyReady, "soon"}, `--ready "soon": want notify, delay=DURATION, tcp or http=/PATH`, false},
		{[]string{KeyReady, "delay=0s"}, `--ready "delay=0s": want delay=DURATION`, false},
		{[]string{KeyReady, "notify=1"}, `--ready "notify=1": notify takes no =VALUE`, false},
		{[]string{KeyReady, "http=healthz"}, `--ready "http=healthz": want http=/PATH, e.g. http=/healthz (the path starts with /)`, false},
		{[]string{KeyReady, "http=//evil.example/x"}, `--ready "http=//evil.example/x": want http=/PATH, e.g. http=/healthz`, false},
		{[]string{KeyReady, "http=/a b"}, `want http=/PATH with a plain URL path`, false},
		{[]string{KeyReadyTimeout, "10"}, `--ready-timeout "10": want a duration with a unit, e.g. 10s`, false},
		{[]string{KeyReadyTimeout, "0s"}, `--ready-timeout "0s": must be positive`, false},
		{[]string{KeyDrainTimeout, "soon"}, `--drain-timeout "soon": want a duration such as 30s`, false},
		{[]string{KeyMinUptime, "-1s"}, `--min-uptime "-1s": must not be negative`, false},
		{[]string{KeyRetireParallel, "0"}, `--retire-parallel "0": want a number from 1 to 1024`, false},
		{[]string{KeyStopSignal, "SIGNOPE"}, `--stop-signal "SIGNOPE": unknown signal`, false},
		{[]string{KeyReloadStrategy, "yolo"}, `--reload-strategy "yolo": want surge or rolling`, false},
		{[]string{KeyBalance, "random"}, `--balance "random": want steer, sticky or shared`, false},
		{[]string{KeySteerBPF, "xdp"}, `--steer-bpf "xdp": want auto, ebpf or cbpf`, false},
		{[]string{KeyWorkerOutput, "syslog"}, `--worker-output "syslog": want auto, inherit, prefix or json`, false},
		{[]string{KeyMaxMemory, "512"}, `--max-memory "512": 512 bytes is below 1MiB: a unit is missing`, false},
		{[]string{KeyMaxMemory, "lots"}, `--max-memory "lots": want a size such as 512MiB`, false},
		{[]string{KeyMaxMemory, "-1GiB"}, `--max-memory "-1GiB": want a size`, false},
		{[]string{KeyMaxMemory, "1PiB"}, `--max-memory "1PiB": want a size`, false},
		{[]string{KeyAdmin, "9100"}, `--admin "9100": want HOST:PORT`, false},
		{[]string{KeyAdmin, "127.0.0.1:http"}, `--admin "127.0.0.1:http": bad port "http"`, false},
		{[]string{KeyAdmin, "bad_host:1"}, `--admin "bad_host:1": bad host "bad_host"`, false},
		{[]string{KeyControl, long}, `--control "` + long + `": unix socket path is 121 bytes, the limit is 107`, false},
		{[]string{KeyLogFormat, "xml"}, `--log-format "xml": want text or json`, false},
		{[]string{KeyLogLevel, "loud"}, `--log-level "loud": want trace, debug, info, warn or error`, false},
		{[]string{KeyEnvironment, "NOEQUALS"}, `--env "NOEQUALS": want KEY=VALUE`, false},
		{[]string{KeyEnvironment, "=x"}, `--env "=x": empty variable name`, false},
		{[]string{KeyEnvironment, "NOTIFY_SOCKET=/x"}, `--env "NOTIFY_SOCKET=/x": NOTIFY_SOCKET is set by handoff for each worker`, false},
		{[]string{KeyListen, "tcp://127.0.0.1:1"}, `--listen "tcp://127.0.0.1:1": want NAME=SCHEME://ADDRESS`, false},
		{[]string{KeyListen, "a=sctp://127.0.0.1:1"}, `--listen "a=sctp://127.0.0.1:1": unknown scheme "sctp"`, false},
		{[]string{KeyListen, "a=tcp://127.0.0.1:0", KeyListen, "a=tcp://127.0.0.1:0"}, `--listen "a=tcp://127.0.0.1:0": name "a" used twice`, false},
		{[]string{KeyListen, "a=tcp://127.0.0.1:0?mode=0660"}, `options after '?' are for unix listeners only`, false},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?mode=rw"}, `--listen "a=unix:///tmp/a.sock?mode=rw": mode "rw": want an octal mode such as 0660`, false},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?mode=0444"}, `nobody could connect`, false},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?color=red"}, `unknown option "color" (want mode, owner or group)`, false},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?mode=0660&mode=0600"}, `option "mode" given 2 times`, false},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?owner=no-such-user-here"}, `--listen "a=unix:///tmp/a.sock?owner=no-such-user-here": owner "no-such-user-here": no such user`, true},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?group=no-such-group-here"}, `group "no-such-group-here": no such group`, true},
		{[]string{KeyListen, "a=unix://@abstract?mode=0660"}, `an abstract unix socket has no mode`, false},
		{[]string{KeyListen, "a=unix:///" + strings.Repeat("b", 110)}, `unix socket path is 111 bytes, the limit is 107`, false},
		{[]string{KeyUser, "no-such-user-here"}, `--user "no-such-user-here": no such user`, true},
		{[]string{KeyUser, "4242"}, `--user "4242": uid 4242 has no entry in the user database to take a group from: set the group too`, true},
		{[]string{KeyGroup, "no-such-group-here"}, `--group "no-such-group-here": no such group`, true},
		{[]string{KeyReady, "delay=1m"}, `--ready "delay=1m" must be shorter than --ready-timeout 60s (the default)`, false},
		{[]string{KeyReady, "delay=1m", KeyReadyTimeout, "30s"}, `--ready "delay=1m" must be shorter than --ready-timeout "30s"`, false},
		{[]string{KeyReady, "tcp", KeyListen, "u=udp://127.0.0.1:0"}, `--ready "tcp" needs a tcp or unix listener to probe`, false},
		{[]string{KeyReady, "http=/"}, `--ready "http=/" needs a tcp or unix listener to probe`, false},
	} {
		t.Run(c.want, func(t *testing.T) {
			_, err := load("", flags([]string{"/bin/sh"}, c.kv...), root)
			ps := problemsOf(t, err)
			if len(ps) != 1 || !strings.Contains(ps[0].String(), c.want) || ps[0].Runtime != c.runtime || ps[0].Pos != "" {
				t.Fatalf("problems %+v, want one (runtime %v) containing %q", ps, c.runtime, c.want)
			}
			if (err.(*Error)).Usage() == c.runtime {
				t.Errorf("Usage() = %v for a runtime=%v problem", !c.runtime, c.runtime)
			}
		})
	}
}

func TestCommandProblems(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	for _, c := range []struct {
		command []string
		want    string
		runtime bool
	}{
		{nil, "no command given (usage: handoff run [flags] -- COMMAND [ARGS...])", false},
		{[]string{""}, "no command given", false},
		{[]string{filepath.Join(dir, "nope")}, "no such file or directory", true},
		{[]string{"handoff-no-such-command"}, "executable file not found", true},
		{[]string{notExec}, "permission denied", true},
	} {
		_, err := load("", flags(c.command), root)
		ps := problemsOf(t, err)
		if len(ps) != 1 || !strings.Contains(ps[0].Msg, c.want) || ps[0].Runtime != c.runtime {
			t.Errorf("command %q: problems %+v, want %q (runtime %v)", c.command, ps, c.want, c.runtime)
		}
	}
}

// As an unprivileged user, changing identities is refused.
func TestNeedsRoot(t *testing.T) {
	user := &system{euid: 1000, egid: 1000, groups: []int{1000, 33}}
	for _, c := range []struct {
		kv   []string
		want string
	}{
		{[]string{KeyUser, "nobody"}, `--user "nobody": needs root (handoff runs as uid 1000)`},
		{[]string{KeyGroup, "nogroup"}, `--group "nogroup": needs root (handoff is not in group 65534)`},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?owner=nobody"}, `owner "nobody": needs root (handoff runs as uid 1000)`},
		{[]string{KeyListen, "a=unix:///tmp/a.sock?group=nogroup"}, `group "nogroup": needs root`},
	} {
		_, err := load("", flags([]string{"/bin/sh"}, c.kv...), user)
		ps := problemsOf(t, err)
		if len(ps) != 1 || !strings.Contains(ps[0].Msg, c.want) || !ps[0].Runtime {
			t.Errorf("%v: problems %+v, want a runtime problem %q", c.kv, ps, c.want)
		}
	}
	// Its own identity and its own groups are fine.
	o, err := load("", flags([]string{"/bin/sh"}, KeyUser, "1000", KeyGroup, "33", KeyListen, "a=unix:///tmp/a.sock?owner=1000&group=www-data"), user)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*o.RunAs, RunAs{User: "1000", Group: "33", UID: 1000, GID: 33}) {
		t.Errorf("run as %+v", *o.RunAs)
	}
}

func TestRunAsUser(t *testing.T) {
	o, err := load("", flags([]string{"/bin/sh"}, KeyUser, "www-data"), root)
	if err != nil {
		t.Skipf("no www-data user here: %v", err)
	}
	if o.RunAs.UID != 33 || o.RunAs.GID != 33 || o.RunAs.User != "www-data" || o.RunAs.Group != "" {
		t.Errorf("run as %+v, want www-data's uid and primary group", *o.RunAs)
	}
	o, err = load("", flags([]string{"/bin/sh"}, KeyGroup, "www-data"), root)
	if err != nil || o.RunAs.UID != 0 || o.RunAs.GID != 33 {
		t.Errorf("group only: %+v, %v; want uid 0 (the master's) and gid 33", o.RunAs, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "0B": 0, "1MiB": 1 << 20, "512MiB": 512 << 20, "512 MiB": 512 << 20, "1GiB": 1 << 30, "1.5GiB": 3 << 29,
		"800MB": 800e6, "2GB": 2e9, "1TiB": 1 << 40, "1TB": 1e12, "1048576": 1 << 20, "4096K": 4 << 20,
		"4096KiB": 4 << 20, "2000kB": 2e6, "512M": 512 << 20, "2G": 2 << 30, ".5GiB": 1 << 29,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "512mib", "512 ", " 512MiB", "512MiB ", "1e9", "0x100000", "-1GiB", "+1GiB", "1_000MB",
		"1 GiB B", "NaN", "Inf", "1..5GiB", "100", "1023KiB", "10000000TiB", "1PB", "12 34MB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseReadyAndSignal(t *testing.T) {
	for in, want := range map[string]Ready{
		"notify": {Mode: ReadyNotify}, "tcp": {Mode: ReadyTCP}, "delay=1.5s": {Mode: ReadyDelay, Delay: 1500 * time.Millisecond},
		"http=/": {Mode: ReadyHTTP, Path: "/"}, "http=/health/z?x=1&y": {Mode: ReadyHTTP, Path: "/health/z?x=1&y"},
	} {
		if got, err := ParseReady(in); err != nil || got != want {
			t.Errorf("ParseReady(%q) = %+v, %v", in, got, err)
		}
	}
	for in, want := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM, "INT": syscall.SIGINT, "10": syscall.Signal(10), "sigusr2": syscall.SIGUSR2} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "SIG", "0", "65", "-1", "TERMINATE"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) accepted", in)
		}
	}
}

// fullFile sets every key; its command is /bin/sh so that it loads here.
func fullFile(sock string) string {
	return fmt.Sprintf(`
command     = ["/bin/sh", "-c", "exec sleep 1000"]
environment = { APP_ENV = "production", PORT = 8080, "DOTTED.NAME" = "x" }
workers     = 4
listen "http" {
  address = "tcp://127.0.0.1:0"
}
listen "api" {
  address = "unix://%s"
  mode    = 0660 # a number works too
  owner   = "nobody"
  group   = 65534
}
ready           = "http=/healthz"
ready_timeout   = "20s"
drain_timeout   = "10s"
min_uptime      = "2s"
retire_parallel = 2
stop_signal     = "SIGQUIT"
reload_strategy = "rolling"
balance         = "sticky"
steer_bpf       = "ebpf"
user            = "nobody"
group           = "nogroup"
worker_output   = "json"
max_memory      = "256MiB"
admin           = "127.0.0.1:9100"
control         = "/run/handoff/app.sock"
pid_file        = "/run/app.pid"
log_format      = "json"
log_level       = "warn"
`, sock)
}

func TestFile(t *testing.T) {
	sock := filepath.Join(testutil.ShortDir(t), "api.sock")
	path := writeFile(t, "app.hcl", fullFile(sock))
	o, err := load(path, Flags{}, root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Command, []string{"/bin/sh", "-c", "exec sleep 1000"}) || o.Path != path {
		t.Errorf("command %q path %q", o.Command, o.Path)
	}
	if !slices.Equal(o.Environment, []string{"APP_ENV=production", "DOTTED.NAME=x", "PORT=8080"}) {
		t.Errorf("environment %q", o.Environment)
	}
	if len(o.Listen) != 2 || o.Listen[0].Name != "http" || o.Listen[1].Name != "api" || o.Listen[1].Address != sock ||
		o.Listen[1].Mode != 0o660 || o.Listen[1].UID != 65534 || o.Listen[1].GID != 65534 {
		t.Errorf("listen %+v", o.Listen)
	}
	if o.Workers != 4 || o.Ready != (Ready{Mode: ReadyHTTP, Path: "/healthz"}) || o.ReadyTimeout != 20*time.Second ||
		o.DrainTimeout != 10*time.Second || o.MinUptime != 2*time.Second || o.RetireParallel != 2 || o.StopSignal != syscall.SIGQUIT ||
		o.Strategy != workers.Rolling || o.Balance != BalanceSticky || o.RunAs.UID != 65534 || o.RunAs.GID != 65534 ||
		o.WorkerOutput != OutputJSON || o.MaxMemory != 256<<20 || o.Admin != "127.0.0.1:9100" || o.Control != "/run/handoff/app.sock" ||
		o.PIDFile != "/run/app.pid" || o.LogFormat != "json" || o.LogLevel != "warn" {
		t.Errorf("options %+v", o)
	}

	// Flags given override the file; the others leave it alone.
	o, err = load(path, flags([]string{"/bin/true", "x"},
		KeyWorkers, "auto", KeyListen, "only=tcp://127.0.0.1:0", KeyEnvironment, "APP_ENV=staging", KeyEnvironment, "EXTRA=1",
		KeyLogLevel, "debug"), root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Command, []string{"/bin/true", "x"}) || !o.WorkersAuto || len(o.Listen) != 1 || o.Listen[0].Name != "only" ||
		o.LogLevel != "debug" || o.LogFormat != "json" || o.Balance != BalanceSticky {
		t.Errorf("overridden: %+v", o)
	}
	if !slices.Equal(o.Environment, []string{"APP_ENV=staging", "DOTTED.NAME=x", "EXTRA=1", "PORT=8080"}) {
		t.Errorf("environment %q: want the file's, with the flags' over it", o.Environment)
	}

	// The same file in JSON syntax.
	jpath := writeFile(t, "app.json", `{
  "command": ["/bin/sh"],
  "workers": "2",
  "listen": {"http": {"address": "tcp://127.0.0.1:0"}},
  "environment": {"A": "1"},
  "min_uptime": "0"
}`)
	o, err = load(jpath, Flags{}, root)
	if err != nil {
		t.Fatal(err)
	}
	if o.Workers != 2 || len(o.Listen) != 1 || !slices.Equal(o.Environment, []string{"A=1"}) || o.MinUptime != 0 {
		t.Errorf("json: %+v", o)
	}
}

// Every problem in a file is reported at its position, in file order.
func TestFileProblems(t *testing.T) {
	ok := "command = [\"/bin/sh\"]\n"
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"syntax", ok + "workers = \n", []string{"app.hcl:2:11: Invalid expression: Expected the start of an expression"}},
		{"unclosed list", "command = [\"/bin/sh\"\nworkers = 2\n", []string{"app.hcl:2:1: Missing item separator"}},
		{"unknown key", ok + "min_uptim = \"1s\"\n", []string{`app.hcl:2:1: Unsupported argument: An argument named "min_uptim" is not expected here. Did you mean "min_uptime"?`}},
		{"unknown block", ok + "admin \"x\" {}\n", []string{`app.hcl:2:1: Unsupported block type`}},
		{"duplicate key", ok + "workers = 1\nworkers = 2\n", []string{`app.hcl:3:1: Attribute redefined`}},
		{"variable", ok + "admin = var.admin\n", []string{`app.hcl:2:9: Variables not allowed`}},
		{"function", ok + "admin = lower(\"X:1\")\n", []string{`app.hcl:2:9: Function calls not allowed`}},
		{"several values", ok + "workers = 0\nready_timeout = 25\nbalance = \"fair\"\n", []string{
			`app.hcl:2:11: workers = 0: want auto or a number from 1 to 1024`,
			`app.hcl:3:17: ready_timeout = 25: want a duration with a unit, e.g. 25s`,
			`app.hcl:4:11: balance = "fair": want steer, sticky or shared`,
		}},
		{"fraction", ok + "workers = 2.5\n", []string{`app.hcl:2:11: workers: want a whole number or a string, not 2.5`}},
		{"bool", ok + "workers = true\n", []string{`app.hcl:2:11: workers: want a string, not bool`}},
		{"null", ok + "admin = null\n", []string{`app.hcl:2:9: admin: want a string, not null`}},
		{"list for scalar", ok + "user = [\"a\"]\n", []string{`app.hcl:2:8: user: want a string, not tuple`}},
		{"command string", "command = \"/bin/sh\"\n", []string{`app.hcl:1:11: command: want a list of strings`}},
		{"command numbers", "command = [\"/bin/sh\", 1]\n", []string{`app.hcl:1:11: command: want a list of strings`}},
		{"command empty", "command = []\n", []string{`app.hcl:1:11: command is empty`}},
		{"no command", "workers = 1\n", []string{`no command given`}},
		{"command missing", "command = [\"/nonexistent/app\"]\n", []string{`app.hcl:1:11: command "/nonexistent/app": no such file or directory`}},
		{"env not a map", ok + "environment = [\"A=1\"]\n", []string{`app.hcl:2:15: environment: want a map of strings`}},
		{"env key", ok + "environment = {\n  A = \"1\"\n  LISTEN_FDS = \"2\"\n}\n", []string{`app.hcl:4:3: environment "LISTEN_FDS": LISTEN_FDS is set by handoff for each worker`}},
		{"env list value", ok + "environment = { A = [\"1\"] }\n", []string{`app.hcl:2:17: environment "A": want a string value`}},
		{"listen no label", ok + "listen { address = \"tcp://127.0.0.1:0\" }\n", []string{`app.hcl:2:8: Missing name for listen`}},
		{"listen no address", ok + "listen \"a\" {}\n", []string{`Missing required argument: The argument "address" is required`}},
		{"listen unknown attr", ok + "listen \"a\" {\n address = \"tcp://127.0.0.1:0\"\n backlog = 5\n}\n", []string{`app.hcl:4:2: Unsupported argument`}},
		{"listen bad url", ok + "listen \"a\" {\n  address = \"tcp//127.0.0.1:0\"\n}\n", []string{`app.hcl:3:13: listen "a": want SCHEME://ADDRESS after the name`}},
		{"listen bad name", ok + "listen \"a:b\" {\n  address = \"tcp://127.0.0.1:0\"\n}\n", []string{`app.hcl:2:8: listen "a:b": name "a:b": only printable ASCII`}},
		{"listen twice", ok + "listen \"a\" { address = \"tcp://127.0.0.1:0\" }\nlisten \"a\" { address = \"tcp://127.0.0.1:0\" }\n", []string{`app.hcl:3:8: listen "a": name "a" used twice`}},
		{"listen mode on tcp", ok + "listen \"a\" {\n  address = \"tcp://127.0.0.1:0\"\n  mode = \"0660\"\n}\n", []string{`app.hcl:4:10: listen "a": mode is for unix listeners only`}},
		{"listen mode junk", ok + "listen \"a\" {\n  address = \"unix:///tmp/a.sock\"\n  mode = 999\n}\n", []string{`app.hcl:4:10: listen "a": mode = 999: want an octal mode such as 0660`}},
		{"listen mode closed", ok + "listen \"a\" {\n  address = \"unix:///tmp/a.sock\"\n  mode = \"0444\"\n}\n", []string{`app.hcl:4:10: listen "a": mode = "0444": nobody could connect`}},
		{"listen owner", ok + "listen \"a\" {\n  address = \"unix:///tmp/a.sock\"\n  owner = \"no-such-user-here\"\n}\n", []string{`app.hcl:4:11: listen "a": owner = "no-such-user-here": no such user`}},
		{"ready delay vs timeout", ok + "ready = \"delay=5s\"\nready_timeout = \"5s\"\n", []string{`app.hcl:2:9: ready = "delay=5s" must be shorter than ready_timeout = "5s"`}},
		{"ready delay vs default", ok + "ready = \"delay=2m\"\n", []string{`app.hcl:2:9: ready = "delay=2m" must be shorter than --ready-timeout 60s (the default)`}},
		{"user", ok + "user = \"no-such-user-here\"\n", []string{`app.hcl:2:8: user = "no-such-user-here": no such user`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, "app.hcl", c.text)
			_, err := load(path, Flags{}, root)
			if err == nil {
				t.Fatalf("loaded:\n%s", c.text)
			}
			ps := problemsOf(t, err)
			var got []string
			for _, p := range ps {
				got = append(got, strings.TrimPrefix(p.String(), filepath.Dir(path)+"/"))
			}
			if len(got) != len(c.want) {
				t.Fatalf("problems:\n%s\nwant %d:\n%s", strings.Join(got, "\n"), len(c.want), strings.Join(c.want, "\n"))
			}
			for i := range got {
				if !strings.Contains(got[i], c.want[i]) {
					t.Errorf("problem %d:\n%s\nwant it to contain\n%s", i, got[i], c.want[i])
				}
			}
		})
	}
	_, err := load(filepath.Join(t.TempDir(), "none.hcl"), Flags{}, root)
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.Contains(ps[0].Msg, "config file: open ") || !ps[0].Runtime {
		t.Errorf("missing file: %+v", ps)
	}
}

// An empty --admin or --control turns the file's off, or back to the
// default.
func TestEmptyOverrides(t *testing.T) {
	path := writeFile(t, "app.hcl", "command = [\"/bin/sh\"]\nadmin = \"127.0.0.1:9100\"\ncontrol = \"/run/x.sock\"\n")
	o, err := load(path, flags(nil, KeyAdmin, "", KeyControl, ""), root)
	if err != nil || o.Admin != "" || o.Control != "" {
		t.Errorf("admin %q control %q, %v; want both empty", o.Admin, o.Control, err)
	}
}

// A flag mistake is named as a flag even with a config file.
func TestFlagOverFileProblem(t *testing.T) {
	path := writeFile(t, "app.hcl", "command = [\"/bin/sh\"]\nworkers = 2\n")
	_, err := load(path, flags(nil, KeyWorkers, "0"), root)
	if ps := problemsOf(t, err); len(ps) != 1 || ps[0].String() != `--workers "0": want auto or a number from 1 to 1024 (one per core is usual; this machine has `+fmt.Sprint(runtime.NumCPU())+`)` {
		t.Errorf("problems %+v", ps)
	}
}

func TestReload(t *testing.T) {
	sock := filepath.Join(testutil.ShortDir(t), "api.sock")
	path := writeFile(t, "app.hcl", fullFile(sock))
	running, err := load(path, flags(nil, KeyLogLevel, "debug", KeyRetireParallel, "3"), root)
	if err != nil {
		t.Fatal(err)
	}
	before := *running

	// Unchanged: no warning, the same options.
	next, warnings, err := reload(running, root)
	if err != nil || len(warnings) != 0 || !reflect.DeepEqual(next, running) {
		t.Fatalf("unchanged file: %+v, %q, %v", next, warnings, err)
	}

	// Every reloadable key changes, and every restart-only one.
	text := fullFile(sock)
	for _, r := range [][2]string{
		{`"exec sleep 1000"`, `"exec sleep 2000"`},
		{`APP_ENV = "production"`, `APP_ENV = "staging"`},
		{"workers     = 4", "workers = 6"},
		{`ready           = "http=/healthz"`, `ready = "tcp"`},
		{`"20s"`, `"40s"`},
		{`min_uptime      = "2s"`, `min_uptime = "0"`},
		{`retire_parallel = 2`, `retire_parallel = 5`},
		{`"rolling"`, `"surge"`},
		{`"sticky"`, `"shared"`},
		{`"256MiB"`, `"1GiB"`},
		{`user            = "nobody"`, `user = "www-data"`},
		{`group           = "nogroup"`, `group = "users"`},
		{`worker_output   = "json"`, `worker_output = "prefix"` + "\nstart_attempts = 0"},
		{`/run/handoff/app.sock`, `/run/handoff/app2.sock`},
		{`admin           = "127.0.0.1:9100"`, `admin = "127.0.0.1:9200"`},
		{`steer_bpf       = "ebpf"`, `steer_bpf = "cbpf"`},
		{`/run/app.pid`, `/run/app2.pid`},
		{`log_format      = "json"`, `log_format = "text"`},
		{`log_level       = "warn"`, `log_level = "error"`},
		{`listen "http" {`, `listen "web" {`},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("fullFile has no %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	next, warnings, err = reload(running, root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*running, before) {
		t.Errorf("Reload changed the running options")
	}
	if !slices.Equal(next.Command, []string{"/bin/sh", "-c", "exec sleep 2000"}) || next.Workers != 6 || next.Ready.Mode != ReadyTCP ||
		next.ReadyTimeout != 40*time.Second || next.MinUptime != 0 || next.Strategy != workers.Surge ||
		next.MaxMemory != 1<<30 || next.Listen[0].Name != "web" || !slices.Contains(next.Environment, "APP_ENV=staging") {
		t.Errorf("reloadable keys did not change: %+v", next)
	}
	// The command line still wins over the file.
	if next.RetireParallel != 3 || next.LogLevel != "debug" {
		t.Errorf("retire_parallel %d, log_level %q: the flags --retire-parallel 3 --log-level debug were not applied again", next.RetireParallel, next.LogLevel)
	}
	// Restart-only keys keep their running values and say so: every
	// key Keys marks Restart (all changed here, but log_level, which the
	// command line sets), and no other.
	if !reflect.DeepEqual(next.RunAs, running.RunAs) || next.Admin != running.Admin || next.PIDFile != running.PIDFile ||
		next.LogFormat != running.LogFormat || next.Control != running.Control || next.Balance != running.Balance ||
		next.SteerBPF != running.SteerBPF || next.WorkerOutput != running.WorkerOutput || next.StartAttempts != running.StartAttempts {
		t.Errorf("a restart-only key changed: %+v", next)
	}
	var warned, restartKeys []string
	for _, w := range warnings {
		name, _, _ := strings.Cut(strings.TrimPrefix(w, path+": "), " changed from ")
		warned = append(warned, name)
	}
	for _, k := range Keys() {
		if k.Restart && k.Name != KeyLogLevel {
			restartKeys = append(restartKeys, k.Name)
		}
	}
	if !slices.Equal(warned, restartKeys) {
		t.Errorf("warnings for %q, want one for each restart-only key %q:\n%s", warned, restartKeys, strings.Join(warnings, "\n"))
	}
	for _, want := range []string{
		path + `: user changed from "nobody (uid 65534)" to "www-data (uid 33)": the running value stays until handoff restarts`,
		path + `: group changed from "nogroup (gid 65534)" to "users (gid 100)": the running value stays until handoff restarts`,
		path + `: steer_bpf changed from "ebpf" to "cbpf": the running value stays until handoff restarts`,
		path + `: start_attempts changed from "5" to "0": the running value stays until handoff restarts`,
	} {
		if !slices.Contains(warnings, want) {
			t.Errorf("no warning %q in:\n%s", want, strings.Join(warnings, "\n"))
		}
	}
	// A reload from next carries the same flags on.
	if again, _, err := reload(next, root); err != nil || again.RetireParallel != 3 {
		t.Errorf("second reload: %+v, %v", again, err)
	}

	// A broken file rejects the reload with its problems.
	os.WriteFile(path, []byte(text+"workers = 0\n"), 0o644)
	if _, _, err := reload(running, root); err == nil || !strings.Contains(err.Error(), "Attribute redefined") {
		t.Errorf("broken file: %v", err)
	}
	os.WriteFile(path, []byte(strings.Replace(text, "workers = 6", "workers = 0", 1)), 0o644)
	_, _, err = reload(running, root)
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.HasPrefix(ps[0].String(), path+":") || !strings.Contains(ps[0].Msg, "workers = 0") {
		t.Errorf("bad value: %+v", ps)
	}
	os.Remove(path)
	if _, _, err := reload(running, root); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("file gone: %v", err)
	}
}

// "auto" keeps meaning what it meant at start: the master lowers its own
// GOMAXPROCS once it runs.
func TestReloadAutoWorkers(t *testing.T) {
	path := writeFile(t, "app.hcl", "command = [\"/bin/sh\"]\nworkers = \"auto\"\n")
	start := &system{autoWorkers: 8}
	running, err := load(path, Flags{}, start)
	if err != nil || running.Workers != 8 {
		t.Fatalf("start: %+v, %v", running, err)
	}
	later := &system{autoWorkers: 1} // GOMAXPROCS(1) in the master
	next, _, err := reload(running, later)
	if err != nil || next.Workers != 8 || !next.WorkersAuto {
		t.Errorf("reload with auto: %d workers (auto %v), %v; want 8", next.Workers, next.WorkersAuto, err)
	}
	os.WriteFile(path, []byte("command = [\"/bin/sh\"]\nworkers = 3\n"), 0o644)
	fixed, _, err := reload(next, later)
	if err != nil || fixed.Workers != 3 {
		t.Fatalf("reload to 3: %+v, %v", fixed, err)
	}
	os.WriteFile(path, []byte("command = [\"/bin/sh\"]\nworkers = \"auto\"\n"), 0o644)
	if back, _, err := reload(fixed, later); err != nil || back.Workers != 8 {
		t.Errorf("back to auto: %d workers, %v; want 8", back.Workers, err)
	}
}

// Without a config file, a reload sees the flags again.
func TestReloadWithoutFile(t *testing.T) {
	running, err := load("", flags([]string{"/bin/sh"}, KeyWorkers, "2"), root)
	if err != nil {
		t.Fatal(err)
	}
	next, warnings, err := reload(running, root)
	if err != nil || next.Workers != 2 || len(warnings) != 1 || !strings.Contains(warnings[0], "no listen sockets") {
		t.Errorf("%+v %q %v", next, warnings, err)
	}
}

// The annotated example sets every key, and loads.
func TestExampleConfig(t *testing.T) {
	const path = "../../examples/config/handoff.hcl"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclparse.NewParser().ParseHCL(src, path)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	content, diags := f.Body.Content(fileSchema())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, a := range fileSchema().Attributes {
		if _, ok := content.Attributes[a.Name]; !ok {
			t.Errorf("the example does not show %s", a.Name)
		}
	}
	if len(content.Blocks) == 0 {
		t.Errorf("the example has no listen block")
	}
	// Each key has a comment line right above it.
	lines := strings.Split(string(src), "\n")
	for name, a := range content.Attributes {
		if prev := strings.TrimSpace(lines[a.Range.Start.Line-2]); !strings.HasPrefix(prev, "#") && !isAttrLine(prev) {
			t.Errorf("%s (line %d) has no comment above it", name, a.Range.Start.Line)
		}
	}
	// As it is, only its (made-up) command is missing.
	_, err = load(path, Flags{}, root)
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.Contains(ps[0].String(), `handoff.hcl:15:11: command "/opt/app/bin/server": no such file or directory`) {
		t.Fatalf("problems %+v, want only the missing command", ps)
	}
	// With a command that exists, it loads.
	o, err := load(path, Flags{Command: []string{"/bin/sh"}}, root)
	if err != nil {
		t.Skipf("the example's users do not exist here: %v", err)
	}
	if o.Workers != 4 || len(o.Listen) != 2 || o.Listen[1].Mode != 0o660 || o.MaxMemory != 512<<20 || o.Admin != "127.0.0.1:9100" {
		t.Errorf("example: %+v", o)
	}
}

// isAttrLine is true for a line that sets a key (a group of keys shares
// one comment).
func isAttrLine(s string) bool {
	name, _, ok := strings.Cut(s, "=")
	return ok && hclIdent(strings.TrimSpace(name))
}

func hclIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func TestStderrIsJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "j")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	env := fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
	if !StderrIsJournal(env, f) {
		t.Errorf("StderrIsJournal(%q, the file) = false", env)
	}
	for _, e := range []string{"", fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino)+1), "junk", env + ":1"} {
		if StderrIsJournal(e, f) {
			t.Errorf("StderrIsJournal(%q) = true", e)
		}
	}
}

// The file schema and Keys agree.
func TestSchema(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Keys() {
		if seen[k.Name] || seen[k.Flag] {
			t.Errorf("key %s or flag %s twice", k.Name, k.Flag)
		}
		seen[k.Name], seen[k.Flag] = true, true
		if k.Name != KeyEnvironment && strings.ReplaceAll(k.Name, "_", "-") != k.Flag {
			t.Errorf("key %s has flag --%s", k.Name, k.Flag)
		}
		if k.Default != "" {
			// A default always validates.
			if _, err := load("", flags([]string{"/bin/sh"}, k.Name, k.Default), root); err != nil {
				t.Errorf("default of %s: %v", k.Name, err)
			}
		}
	}
	var _ hcl.Range // the package's positions are HCL's
}
