package workers

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBackoffFor(t *testing.T) {
	want := []time.Duration{
		100 * time.Millisecond,
		200 * time.Millisecond,
		400 * time.Millisecond,
		800 * time.Millisecond,
		1600 * time.Millisecond,
		3200 * time.Millisecond,
		6400 * time.Millisecond,
		12800 * time.Millisecond,
		25600 * time.Millisecond,
		30 * time.Second, // capped
		30 * time.Second,
	}
	for i, w := range want {
		if got := backoffFor(i + 1); got != w {
			t.Errorf("failure %d: backoff %v, want %v", i+1, got, w)
		}
	}
	for _, n := range []int{50, 1000, 1 << 30} {
		if got := backoffFor(n); got != backoffMax {
			t.Errorf("backoffFor(%d) = %v, want the cap %v", n, got, backoffMax)
		}
	}
}

// TestJudge pins the restart policy: what backs off and what is replaced
// at once.
func TestJudge(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ready := start.Add(50 * time.Millisecond)
	const minUp = time.Second
	tests := []struct {
		name       string
		readyAt    time.Time
		upFor      time.Duration // after ready (or after start if never ready)
		exit       exitInfo
		failure    string
		wantFailed bool
		wantReason string
	}{
		{"exit before ready", time.Time{}, 10 * time.Millisecond, exitedWith(3), "", true, "exited with status 3 before ready"},
		{"crash before ready", time.Time{}, 10 * time.Millisecond, killedBy(unix.SIGSEGV), "", true, "killed by SIGSEGV before ready"},
		{"outside kill before ready", time.Time{}, 10 * time.Millisecond, killedBy(unix.SIGKILL), "", true, "killed by SIGKILL before ready"},
		{"ready timeout", time.Time{}, time.Minute, killedBy(unix.SIGKILL), "not ready within 1m0s", true, "not ready within 1m0s"},
		// gunicorn without --preload: READY=1, then the import fails.
		{"exit soon after ready", ready, 300 * time.Millisecond, exitedWith(1), "", true, "exited with status 1 300ms after ready"},
		{"exit 0 soon after ready", ready, 300 * time.Millisecond, exitedWith(0), "", true, "exited with status 0 300ms after ready"},
		{"crash soon after ready", ready, 300 * time.Millisecond, killedBy(unix.SIGABRT), "", true, "killed by SIGABRT 300ms after ready"},
		// The OOM killer, kill -9, an operator's kill: replaced at once,
		// however soon after ready.
		{"SIGKILL soon after ready", ready, 5 * time.Millisecond, killedBy(unix.SIGKILL), "", false, "killed by SIGKILL"},
		{"SIGTERM soon after ready", ready, 5 * time.Millisecond, killedBy(unix.SIGTERM), "", false, "killed by SIGTERM"},
		{"SIGINT soon after ready", ready, 5 * time.Millisecond, killedBy(unix.SIGINT), "", false, "killed by SIGINT"},
		{"exit after min uptime", ready, 2 * time.Second, exitedWith(1), "", false, "exited with status 1"},
		{"crash after min uptime", ready, 2 * time.Second, killedBy(unix.SIGSEGV), "", false, "killed by SIGSEGV"},
		{"exit exactly at min uptime", ready, minUp, exitedWith(2), "", false, "exited with status 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.readyAt
			if base.IsZero() {
				base = start
			}
			v := judge(tt.readyAt, base.Add(tt.upFor), tt.exit, tt.failure, minUp)
			if v.failed != tt.wantFailed || v.reason != tt.wantReason {
				t.Errorf("judge = %+v, want failed=%v reason %q", v, tt.wantFailed, tt.wantReason)
			}
		})
	}
}

func TestKilledFromOutside(t *testing.T) {
	outside := []unix.Signal{unix.SIGKILL, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}
	own := []unix.Signal{unix.SIGSEGV, unix.SIGABRT, unix.SIGBUS, unix.SIGILL, unix.SIGFPE, unix.SIGSYS, unix.SIGTRAP, unix.SIGPIPE, unix.SIGXCPU}
	for _, s := range outside {
		if !killedBy(s).killedFromOutside() {
			t.Errorf("%s: not counted as a kill from outside", unix.SignalName(s))
		}
	}
	for _, s := range own {
		if killedBy(s).killedFromOutside() {
			t.Errorf("%s: counted as a kill from outside", unix.SignalName(s))
		}
	}
	if exitedWith(137).killedFromOutside() {
		t.Error("exit status 137 counted as a kill")
	}
}
