package main

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TestTreeCountsZombie: a child that has exited and is not yet reaped
// counts as a zombie under its parent, and no longer once reaped.
func TestTreeCountsZombie(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start true:", err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, _ := procState(pid); st == "Z" {
			break
		}
		if time.Now().After(deadline) {
			cmd.Wait()
			t.Fatalf("child %d never became a zombie", pid)
		}
		time.Sleep(5 * time.Millisecond) // polling a state with a deadline
	}
	if z, _ := treeCounts(os.Getpid()); z < 1 {
		t.Errorf("an unreaped child: %d zombies counted, want at least 1", z)
	}
	cmd.Wait()
	if st, err := procState(pid); err == nil && st == "Z" {
		t.Fatalf("child %d still a zombie after Wait", pid)
	}
}
