package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSweepRuntimeDirs(t *testing.T) {
	parent := t.TempDir()
	mk := func(name string) string {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "n1.sock"), nil, 0o600)
		return dir
	}
	live := mk("handoff-live")
	release, err := claimRuntimeDir(live)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	dead := mk("handoff-dead")
	releaseDead, err := claimRuntimeDir(dead)
	if err != nil {
		t.Fatal(err)
	}
	releaseDead()             // as the kernel does when a master dies
	noLock := mk("handoff-0") // a control socket directory, say
	other := mk("app-cache")  // not ours at all
	os.WriteFile(filepath.Join(other, runtimeDirLock), nil, 0o600)
	file := filepath.Join(parent, "handoff-file")
	os.WriteFile(file, nil, 0o600)

	removed, err := sweepRuntimeDirs(parent)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{dead}) {
		t.Errorf("removed %q, want only %s", removed, dead)
	}
	for _, p := range []string{live, noLock, other, file, filepath.Join(live, runtimeDirLock)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s is gone: %v", p, err)
		}
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead master's directory is still there: %v", err)
	}
	// A lock held by another process counts as live too.
	held := mk("handoff-held")
	lockf := filepath.Join(held, runtimeDirLock)
	os.WriteFile(lockf, nil, 0o600)
	if _, err := exec.LookPath("flock"); err == nil {
		cmd := exec.Command("flock", "--exclusive", "--close", lockf, "sleep", "1000")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if time.Now().After(deadline) {
				t.Fatal("flock(1) did not take the lock within 10s")
			}
			free, err := lockIsFree(lockf)
			if err != nil {
				t.Fatal(err)
			}
			if !free {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if removed, _ := sweepRuntimeDirs(parent); len(removed) != 0 {
			t.Errorf("swept %q while flock(1) held its lock", removed)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if removed, _ := sweepRuntimeDirs(parent); !slices.Equal(removed, []string{held}) {
			t.Errorf("after flock(1) died: removed %q, want %s", removed, held)
		}
	}
}
