package workers

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// assemble builds testdata/shim/<arch>.s with the given GNU binutils
// prefix and returns the raw code, or skips.
func assemble(t *testing.T, arch, prefix string) []byte {
	t.Helper()
	as, objcopy := prefix+"as", prefix+"objcopy"
	for _, tool := range []string{as, objcopy} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: binutils%s)", tool, strings.TrimSuffix("-"+prefix, "-"))
		}
	}
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "shim.o"), filepath.Join(dir, "shim.bin")
	if out, err := exec.Command(as, "-o", obj, filepath.Join("testdata", "shim", arch+".s")).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", as, err, out)
	}
	if out, err := exec.Command(objcopy, "-O", "binary", "-j", ".text", obj, bin).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", objcopy, err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestShimMatchesSource checks that the shim's bytes are its source,
// assembled, for each architecture whose assembler is installed.
func TestShimMatchesSource(t *testing.T) {
	for _, tt := range []struct{ arch, prefix, code string }{
		{"amd64", "", shimAMD64},
		{"arm64", "aarch64-linux-gnu-", shimARM64},
	} {
		t.Run(tt.arch, func(t *testing.T) {
			if tt.prefix == "" && !isAMD64 {
				t.Skip("the host's as is not an amd64 assembler")
			}
			if got := assemble(t, tt.arch, tt.prefix); !bytes.Equal(got, []byte(tt.code)) {
				t.Errorf("testdata/shim/%s.s assembles to %d bytes that differ from shim_linux_%s.go's %d: regenerate it", tt.arch, len(got), tt.arch, len(tt.code))
			}
		})
	}
}

// TestShimARM64UnderQemu runs the arm64 shim where qemu-user can: it must
// exec the (host) command with LISTEN_PID set to its own pid.
func TestShimARM64UnderQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Skip("qemu-aarch64-static not installed (Debian: qemu-user-static)")
	}
	img := filepath.Join(t.TempDir(), "shim")
	if err := os.WriteFile(img, shimELF(shimARM64, shimMachineARM64), 0o755); err != nil {
		t.Fatal(err)
	}
	// qemu's -0 sets the guest's argv[0]: the master passes the command's
	// path there.
	cmd := exec.Command(qemu, "-0", "/bin/sh", img, "my-shell", "-c", `echo "$LISTEN_PID $$ $0 $FOO"`)
	cmd.Env = []string{shimPlaceholder, "FOO=bar"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 4 || f[0] != f[1] || f[2] != "my-shell" || f[3] != "bar" {
		t.Errorf("output %q, want LISTEN_PID equal to the pid, argv[0] my-shell, FOO=bar", out)
	}
	cmd = exec.Command(qemu, "-0", "/nonexistent/app", img, "app")
	cmd.Env = []string{shimPlaceholder}
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 127 || string(out) != "handoff: cannot execute worker command /nonexistent/app\n" {
		t.Errorf("exec failure: %v, output %q", err, out)
	}
}
