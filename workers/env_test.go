package workers

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCleanEnv(t *testing.T) {
	tests := []struct {
		kv   string
		keep bool
	}{
		// The master's own place under systemd.
		{"NOTIFY_SOCKET=/run/systemd/notify", false},
		{"NOTIFY_SOCKET=", false},
		{"LISTEN_PID=1", false},
		{"LISTEN_FDS=2", false},
		{"LISTEN_FDNAMES=http:admin", false},
		{"LISTEN_ANYTHING=x", false},
		{"WATCHDOG_USEC=30000000", false},
		{"WATCHDOG_PID=1", false},
		// handoff's and tableflip's internals, and the per-worker ones.
		{"HANDOFF_INTERNAL_EXEC=/usr/bin/app", false},
		{"HANDOFF_INTERNAL_=x", false},
		{"TABLEFLIP_HAS_PARENT_7=yes", false},
		{"HANDOFF_WORKER=3", false},
		{"HANDOFF_GENERATION=2", false},
		// A variable without '=' is matched by its whole text.
		{"LISTEN_FDS", false},
		{"NOTIFY_SOCKET", false},
		// Everything else passes, even with a similar name.
		{"PATH=/usr/bin:/bin", true},
		{"HOME=/root", true},
		{"A=b=c", true},
		{"NOTIFY_SOCKETS=x", true},
		{"MY_NOTIFY_SOCKET=x", true},
		{"LISTEN=1", true},
		{"LISTENER_PORT=8080", true},
		{"listen_fds=2", true},
		{"WATCHDOG=1", true},
		{"HANDOFF_WORKERS=4", true},
		{"HANDOFF_GENERATIONS=1", true},
		{"HANDOFF_CONTROL=/run/handoff.sock", true},
		{"HANDOFF_INTERNAL=x", true},
		{"TABLEFLIP=1", true},
		{"X_LISTEN_FDS=1", true},
		{"=weird", true},
		{"", true},
	}
	var in, want []string
	for _, tt := range tests {
		t.Run(tt.kv, func(t *testing.T) {
			got := cleanEnv([]string{tt.kv})
			if kept := len(got) == 1 && got[0] == tt.kv; kept != tt.keep || len(got) > 1 {
				t.Errorf("cleanEnv([%q]) = %q, want kept=%v", tt.kv, got, tt.keep)
			}
		})
		in = append(in, tt.kv)
		if tt.keep {
			want = append(want, tt.kv)
		}
	}
	// All at once: order and duplicates are kept, the input is not changed.
	in = append(in, "PATH=/second", "LISTEN_FDS=9")
	want = append(want, "PATH=/second")
	orig := slices.Clone(in)
	got := cleanEnv(in)
	if !slices.Equal(got, want) {
		t.Errorf("cleanEnv = %q,\nwant %q", got, want)
	}
	if !slices.Equal(in, orig) {
		t.Error("cleanEnv modified its input")
	}
	if len(got) > 0 {
		got[0] = "CHANGED=1"
		if in[0] == "CHANGED=1" {
			t.Error("cleanEnv's result shares the input's array")
		}
	}
	if got := cleanEnv(nil); got == nil || len(got) != 0 {
		t.Errorf("cleanEnv(nil) = %#v, want empty", got)
	}
}

const shimTestEnv = "HANDOFF_TEST_SHIM"

// TestExecShimHelper is run by TestExecShim in a child process. Before
// the exec it reports its pid and calls ExecShim, which replaces it with
// the same test binary; after, ExecShim returns and it reports what the
// worker's command sees.
func TestExecShimHelper(t *testing.T) {
	if os.Getenv(shimTestEnv) == "" {
		t.Skip("only run as a helper process")
	}
	if _, ok := os.LookupEnv(shimEnv); ok {
		fmt.Printf("\nBEFORE %d\n", os.Getpid())
		ExecShim()
		fmt.Println("\nExecShim returned")
		os.Exit(3)
	}
	ExecShim() // must return at once without the variable
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "HANDOFF_") {
			env = append(env, kv)
		}
	}
	slices.Sort(env)
	fmt.Printf("\nAFTER %d %s\n", os.Getpid(), strings.Join(env, " "))
}

func TestExecShim(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		wantEnv string // "{pid}" is the child's pid
	}{
		{"with sockets", []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=a:b"},
			"HANDOFF_TEST_SHIM=1 LISTEN_FDNAMES=a:b LISTEN_FDS=2 LISTEN_PID={pid}"},
		{"stale pid replaced", []string{"LISTEN_FDS=1", "LISTEN_PID=1"},
			"HANDOFF_TEST_SHIM=1 LISTEN_FDS=1 LISTEN_PID={pid}"},
		{"no sockets", nil, "HANDOFF_TEST_SHIM=1"},
		{"no sockets, stale pid dropped", []string{"LISTEN_PID=1"}, "HANDOFF_TEST_SHIM=1"},
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestExecShimHelper$", "-test.count=1")
			cmd.Env = append(cleanEnv(os.Environ()), shimTestEnv+"=1", shimEnv+"="+self, "GORACE=atexit_sleep_ms=0")
			cmd.Env = append(cmd.Env, tt.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			var before, after int
			var env string
			for _, line := range strings.Split(string(out), "\n") {
				if rest, ok := strings.CutPrefix(line, "BEFORE "); ok {
					before, _ = strconv.Atoi(rest)
				}
				if rest, ok := strings.CutPrefix(line, "AFTER "); ok {
					pid, e, _ := strings.Cut(rest, " ")
					after, _ = strconv.Atoi(pid)
					env = e
				}
			}
			if before == 0 || after == 0 {
				t.Fatalf("helper output lacks BEFORE/AFTER:\n%s", out)
			}
			if before != after {
				t.Errorf("pid %d before exec, %d after: the shim must keep the pid", before, after)
			}
			if want := strings.ReplaceAll(tt.wantEnv, "{pid}", strconv.Itoa(after)); env != want {
				t.Errorf("worker environment %q, want %q", env, want)
			}
		})
	}
}

func TestExecShimFailure(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestExecShimHelper$", "-test.count=1")
	cmd.Env = append(cleanEnv(os.Environ()), shimTestEnv+"=1", shimEnv+"=/nonexistent/cmd", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 127 {
		t.Fatalf("helper: %v, want exit status 127\n%s", err, out)
	}
	if !strings.Contains(string(out), "cannot execute worker command /nonexistent/cmd") {
		t.Errorf("no explanation on stderr:\n%s", out)
	}
}
