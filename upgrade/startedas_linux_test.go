package upgrade

import (
	"os"
	"path/filepath"
	"strings"
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
		got, pinned, err := StartedAs(c.arg0)
		if err != nil || got != c.want || pinned != "" {
			t.Errorf("StartedAs(%q) = %q, %q, %v; want %q", c.arg0, got, pinned, err, c.want)
		}
	}
}

// A master run as root follows a symlink only where nobody but root can
// change what it names: a directory on the way that another user owns or
// may write to (unless sticky, as /tmp, with a root-owned entry), or a
// symlink another user owns, pins the resolved path, and says why.
func TestStartedAsRootOnlyPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the rule applies to a master run as root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	self, err = filepath.EvalSymlinks(self)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir() // under /tmp: sticky, and this entry root's
	mk := func(name string, mode os.FileMode) string {
		t.Helper()
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		link := filepath.Join(d, "handoff")
		if err := os.Symlink(self, link); err != nil {
			t.Fatal(err)
		}
		return link
	}
	safe := mk("safe", 0o755)
	open := mk("open", 0o777)
	foreign := mk("foreign", 0o755)
	if err := os.Lchown(foreign, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	sticky := mk("sticky", 0o777|os.ModeSticky)
	theirs := mk("theirs", 0o755)
	if err := os.Chown(filepath.Dir(theirs), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		arg0, want, why string
	}{
		{safe, safe, ""},
		{sticky, sticky, ""},
		{open, self, "others may write to"},
		{foreign, self, "a symlink of uid 65534"},
		{theirs, self, "a directory of uid 65534"},
	} {
		got, pinned, err := StartedAs(c.arg0)
		if err != nil || got != c.want || (c.why == "") != (pinned == "") || !strings.Contains(pinned, c.why) {
			t.Errorf("StartedAs(%q) = %q, %q, %v; want %q, pinned saying %q", c.arg0, got, pinned, err, c.want, c.why)
		}
	}
}
