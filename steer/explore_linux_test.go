//go:build linux

package steer

import "testing"

func TestExplore(t *testing.T) {
	forEach(t, func(t *testing.T, m Mechanism) {
		g := newTestGroup(t, "tcp://127.0.0.1:0", 4, ModeSteer, m)
		c := connectAndCount(t, g, 64)
		lo, hi, s := spread(c, bank(4, 0))
		t.Logf("%s: %d..%d %s", g, lo, hi, s)
	})
}
