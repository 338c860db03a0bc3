package workers

import (
	"testing"
	"time"
)

func TestNextBackoffSequence(t *testing.T) {
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
		30 * time.Second,
	}
	var d time.Duration
	for i, w := range want {
		d = nextBackoff(d)
		if d != w {
			t.Fatalf("failure %d: backoff %v, want %v", i+1, d, w)
		}
	}
}

func TestNextBackoff(t *testing.T) {
	tests := []struct {
		prev, want time.Duration
	}{
		{0, backoffMin},
		{backoffMin, 2 * backoffMin},
		{time.Second, 2 * time.Second},
		{backoffMax / 2, backoffMax},
		{backoffMax/2 + 1, backoffMax},
		{backoffMax - 1, backoffMax},
		{backoffMax, backoffMax},
		{time.Nanosecond, 2 * time.Nanosecond},
	}
	for _, tt := range tests {
		if got := nextBackoff(tt.prev); got != tt.want {
			t.Errorf("nextBackoff(%v) = %v, want %v", tt.prev, got, tt.want)
		}
	}
	// From any backoff the slot can be in, the next is within bounds and
	// no shorter.
	for d := backoffMin; d <= backoffMax; d += 37 * time.Millisecond {
		n := nextBackoff(d)
		if n < d || n < backoffMin || n > backoffMax {
			t.Fatalf("nextBackoff(%v) = %v", d, n)
		}
	}
	if backoffMin <= 0 || backoffMax < backoffMin || minHealthy <= 0 {
		t.Errorf("restart policy constants: min %v, max %v, healthy %v", backoffMin, backoffMax, minHealthy)
	}
}

func TestSlotSnapshot(t *testing.T) {
	g := &generation{num: 7}
	started := time.Now().Add(-time.Minute)
	until := time.Now().Add(400 * time.Millisecond)
	tests := []struct {
		name   string
		setup  func(s *slot)
		want   WorkerStatus
		wantOK bool
	}{
		{"empty", func(s *slot) {}, WorkerStatus{Slot: 2, Generation: 7}, false},
		{"empty after restarts", func(s *slot) { s.restarts = 3 }, WorkerStatus{Slot: 2, Generation: 7, Restarts: 3}, false},
		{"backoff", func(s *slot) { s.restarts = 4; s.backoffUntil = until },
			WorkerStatus{Slot: 2, Generation: 7, Restarts: 4, State: Backoff, Since: until}, true},
		{"worker", func(s *slot) {
			s.restarts = 1
			s.cur = &worker{proc: &proc{pid: 4242, pidfd: -1}, state: Ready, status: "serving", started: started}
		}, WorkerStatus{Slot: 2, Generation: 7, Restarts: 1, PID: 4242, State: Ready, Status: "serving", Since: started}, true},
		{"worker wins over a stale backoff", func(s *slot) {
			s.backoffUntil = until
			s.cur = &worker{proc: &proc{pid: 1, pidfd: -1}, state: Starting, started: started}
		}, WorkerStatus{Slot: 2, Generation: 7, PID: 1, State: Starting, Since: started}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlot(g, 2)
			tt.setup(s)
			got, ok := s.snapshot()
			if ok != tt.wantOK || got != tt.want {
				t.Fatalf("snapshot() = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestSlotStopUnstarted stops a slot that never ran: it must return at
// once, and stop again is harmless.
func TestSlotStopUnstarted(t *testing.T) {
	s := newSlot(&generation{num: 1}, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.stop(t.Context())
		s.stop(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stop of an unstarted slot blocked")
	}
	if !s.stopping() {
		t.Error("stopping() = false after stop")
	}
}
