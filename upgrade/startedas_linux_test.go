package upgrade

import (
	"os"
	"path/filepath"
	"testing"
)

// StartedAs keeps the path the master was started as, made absolute but
// not resolved through symlinks, so an upgrade runs what a flipped
// symlink names then; an argv[0] that is not this executable falls back
// to the executable's own path.
func TestStartedAs(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err = filepath.EvalSymlinks(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "bin", "handoff")
	if err := os.Symlink(self, link); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(cwd, link)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(dir, "bin"))
	for _, c := range []struct{ arg0, want string }{
		{link, link},
		{rel, link},
		{"handoff", link},                     // looked up in PATH
		{"/bin/sh", self},                     // another executable
		{filepath.Join(dir, "missing"), self}, // gone
		{"", self},
	} {
		got, err := StartedAs(c.arg0)
		if err != nil || got != c.want {
			t.Errorf("StartedAs(%q) = %q, %v; want %q", c.arg0, got, err, c.want)
		}
	}
}
