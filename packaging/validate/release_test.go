package validate

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const repo = "../.."

// TestRelease checks a snapshot release: the one in $HANDOFF_DIST if
// set (goreleaser's dist/, from .ci/release-check when goreleaser is
// installed), else one the emulation in goreleaser_test.go builds from
// .goreleaser.yaml. Every artifact is opened and compared with what the
// config promises: static, stripped binaries for each architecture
// carrying the version, archives and .debs holding exactly the files
// listed, with their modes, a packaged unit systemd accepts, checksums.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds handoff: not in -short mode")
	}
	for _, tool := range []string{"git", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on this machine: %v", tool, err)
		}
	}
	c, err := loadGoreleaser(repo)
	if err != nil {
		t.Fatal(err)
	}
	dist := os.Getenv("HANDOFF_DIST")
	if dist == "" {
		dist = t.TempDir()
		start := time.Now()
		if _, err := snapshot(repo, dist, c, t.Logf); err != nil {
			t.Fatalf("emulated snapshot: %v", err)
		}
		t.Logf("emulated snapshot release in %v", time.Since(start).Round(time.Millisecond))
	} else {
		t.Logf("checking goreleaser's output in %s", dist)
	}
	var meta struct {
		Version string `json:"version"`
	}
	b, err := os.ReadFile(filepath.Join(dist, "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil || meta.Version == "" {
		t.Fatalf("metadata.json: %v %q", err, b)
	}
	checkDist(t, c, dist, meta.Version)
}

func checkDist(t *testing.T, c *grConfig, dist, version string) {
	b, n, a := c.Builds[0], c.NFPMs[0], c.Archives[0]
	if !slices.Equal(b.Env, []string{"CGO_ENABLED=0"}) || !slices.Contains(b.Flags, "-trimpath") {
		t.Errorf("build env %q flags %q: want CGO_ENABLED=0 and -trimpath", b.Env, b.Flags)
	}
	if !slices.Equal(b.Goarch, []string{"amd64", "arm64"}) || !slices.Equal(b.Goos, []string{"linux"}) {
		t.Errorf("build targets %q/%q: want linux amd64 and arm64", b.Goos, b.Goarch)
	}
	files, err := archiveFiles(repo, a)
	if err != nil {
		t.Fatal(err)
	}
	for _, goarch := range b.Goarch {
		data := map[string]string{"ProjectName": c.ProjectName, "Version": version, "Os": "linux", "Arch": goarch, "PackageName": n.PackageName}
		t.Run(goarch, func(t *testing.T) {
			name, err := render(a.NameTemplate, data)
			if err != nil {
				t.Fatal(err)
			}
			checkArchive(t, filepath.Join(dist, name+".tar.gz"), files, b.Binary, goarch, version)
			name, err = render(n.FileNameTemplate, data)
			if err != nil {
				t.Fatal(err)
			}
			checkDeb(t, filepath.Join(dist, name+".deb"), n, b.Binary, goarch, version)
		})
	}
	name, err := render(c.Checksum.NameTemplate, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	sums, err := os.ReadFile(filepath.Join(dist, name))
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, file, ok := strings.Cut(line, "  ")
		if !ok {
			t.Errorf("%s: bad line %q", name, line)
			continue
		}
		if got, err := fileSHA256(filepath.Join(dist, file)); err != nil || got != sum {
			t.Errorf("%s: %s has sha256 %s (%v), the file says %s", name, file, got, err, sum)
		}
		if strings.HasSuffix(file, ".deb") || strings.HasSuffix(file, ".tar.gz") {
			count++
		}
	}
	if want := 2 * len(b.Goarch); count != want {
		t.Errorf("%s lists %d archives and packages, want %d", name, count, want)
	}
}

// checkArchive checks that a tarball holds the binary and exactly the
// files the config lists, unchanged.
func checkArchive(t *testing.T, name string, files map[string]string, binary, goarch, version string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatalf("archive: %v", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	tr := tar.NewReader(gz)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = true
		if h.Name == binary {
			if h.Mode&0o111 == 0 {
				t.Errorf("%s: %s is not executable (mode %o)", name, h.Name, h.Mode)
			}
			checkBinary(t, content, goarch, version)
			continue
		}
		src, ok := files[h.Name]
		if !ok {
			t.Errorf("%s: unexpected %s", filepath.Base(name), h.Name)
			continue
		}
		if want, _ := os.ReadFile(src); !bytes.Equal(content, want) {
			t.Errorf("%s: %s differs from %s", filepath.Base(name), h.Name, src)
		}
	}
	for want := range files {
		if !seen[want] {
			t.Errorf("%s: no %s", filepath.Base(name), want)
		}
	}
	if !seen[binary] {
		t.Errorf("%s: no %s binary", filepath.Base(name), binary)
	}
}

// checkDeb checks a .deb: its control fields, that it holds exactly the
// binary and the configured contents with their modes and owners, its
// maintainer scripts, and that systemd accepts the unit it installs.
func checkDeb(t *testing.T, deb string, n grNFPM, binary, goarch, version string) {
	t.Helper()
	base := filepath.Base(deb)
	out, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture", "Maintainer", "Description").Output()
	if err != nil {
		t.Fatalf("dpkg-deb --field %s: %v", base, err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, " ") {
			fields[k] = v
		}
	}
	for k, want := range map[string]string{"Package": n.PackageName, "Version": debVersion(version), "Architecture": debArch[goarch], "Maintainer": n.Maintainer} {
		if fields[k] != want {
			t.Errorf("%s: %s: %q, want %q", base, k, fields[k], want)
		}
	}

	// What it installs: path -> mode, from dpkg-deb --contents.
	out, err = exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --contents %s: %v", base, err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			t.Errorf("%s: cannot read %q", base, sc.Text())
			continue
		}
		if f[1] != "root/root" {
			t.Errorf("%s: %s is owned by %s, want root/root", base, f[5], f[1])
		}
		got[path.Clean("/"+strings.TrimPrefix(f[5], "./"))] = f[0]
	}
	want := map[string]string{path.Join(n.Bindir, binary): "-rwxr-xr-x"}
	sources := map[string]string{}
	for _, c := range n.Contents {
		mode := os.FileMode(c.FileInfo.Mode).Perm()
		if c.Type == "dir" {
			want[c.Dst] = "d" + mode.String()[1:]
			continue
		}
		want[c.Dst] = "-" + mode.String()[1:]
		sources[c.Dst] = filepath.Join(repo, c.Src)
	}
	for p, mode := range want {
		if got[p] != mode {
			t.Errorf("%s: %s has mode %q, want %q", base, p, got[p], mode)
		}
	}
	for p, mode := range got {
		if _, ok := want[p]; !ok && !strings.HasPrefix(mode, "d") {
			t.Errorf("%s: unexpected file %s", base, p)
		}
	}

	// The files themselves, and the scripts.
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--extract", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --extract %s: %v\n%s", base, err, out)
	}
	for dst, src := range sources {
		a, _ := os.ReadFile(filepath.Join(dir, dst))
		b, _ := os.ReadFile(src)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: %s differs from %s", base, dst, src)
		}
	}
	bin, err := os.ReadFile(filepath.Join(dir, n.Bindir, binary))
	if err != nil {
		t.Fatal(err)
	}
	checkBinary(t, bin, goarch, version)
	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control %s: %v\n%s", base, err, out)
	}
	for script, src := range map[string]string{"postinst": n.Scripts.Postinstall, "postrm": n.Scripts.Postremove} {
		a, err := os.ReadFile(filepath.Join(ctl, script))
		b, _ := os.ReadFile(filepath.Join(repo, src))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: %s missing or not %s: %v", base, script, src, err)
		}
		if st, err := os.Stat(filepath.Join(ctl, script)); err == nil && st.Mode()&0o111 == 0 {
			t.Errorf("%s: %s is not executable", base, script)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctl, script)).CombinedOutput(); err != nil {
			t.Errorf("%s: %s: sh -n: %v\n%s", base, script, err, out)
		}
	}
	for dst := range sources {
		if strings.HasPrefix(dst, "/usr/lib/systemd/system/") {
			verifyUnit(t, filepath.Join(dir, dst), n.Bindir)
		}
	}
}

// verifyUnit runs systemd-analyze verify on a unit file (a template is
// verified as an instance). The packaged binary is not installed on this
// machine, so the one complaint accepted is that it is missing.
func verifyUnit(t *testing.T, unit, bindir string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Logf("no systemd-analyze: %s not verified", filepath.Base(unit))
		return
	}
	for _, err := range unitProblems(unit, bindir, t.TempDir()) {
		t.Error(err)
	}
}

func unitProblems(unit, bindir, tmp string) problems {
	var p problems
	name := strings.Replace(filepath.Base(unit), "@.", "@verify.", 1)
	b, err := os.ReadFile(unit)
	if err != nil {
		p.add("%v", err)
		return p
	}
	if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
		p.add("%v", err)
		return p
	}
	out, _ := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(tmp, name)).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" || strings.Contains(l, "Command "+path.Join(bindir, "handoff")+" is not executable") {
			continue
		}
		p.add("systemd-analyze verify %s: %s", filepath.Base(unit), l)
	}
	return p
}

// elfMachine is the ELF machine of each GOARCH built.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkBinary checks a release binary: an ELF executable for goarch,
// static (no interpreter, no shared library), stripped, with the version
// in it; on this machine's architecture, 'handoff version' prints it.
func checkBinary(t *testing.T, b []byte, goarch, version string) {
	t.Helper()
	for _, err := range binaryProblems(b, goarch, version, t.TempDir()) {
		t.Error(err)
	}
}

func binaryProblems(b []byte, goarch, version, tmp string) problems {
	var p problems
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		p.add("binary for %s: %v", goarch, err)
		return p
	}
	defer f.Close()
	if f.Machine != elfMachine[goarch] || f.Type != elf.ET_EXEC {
		p.add("binary for %s: machine %v, type %v; want %v, ET_EXEC", goarch, f.Machine, f.Type, elfMachine[goarch])
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			p.add("binary for %s has an ELF interpreter: not static", goarch)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		p.add("binary for %s needs shared libraries %v", goarch, libs)
	}
	if _, err := f.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
		p.add("binary for %s has a symbol table: want -s -w", goarch)
	}
	if !bytes.Contains(b, []byte(version)) {
		p.add("binary for %s does not contain its version %q (-X main.version)", goarch, version)
	}
	if goarch != runtime.GOARCH {
		return p
	}
	exe := filepath.Join(tmp, "handoff")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		p.add("%v", err)
		return p
	}
	out, err := exec.Command(exe, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "handoff "+version {
		p.add("handoff version: %v %q, want %q", err, out, "handoff "+version)
	}
	return p
}

// TestReleaseChecksReject shows the artifact checks failing: on a
// dynamically linked, unstripped binary, and on a unit systemd rejects.
func TestReleaseChecksReject(t *testing.T) {
	exe, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	exe, _ = filepath.EvalSymlinks(exe)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	errs := binaryProblems(b, runtime.GOARCH, "v9.9.9", t.TempDir())
	for _, want := range []string{"interpreter", "shared libraries", "does not contain its version"} {
		if !strings.Contains(fmt.Sprint(errs), want) {
			t.Errorf("%s: problems %q, want one mentioning %q", exe, errs, want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze")
	}
	unit, err := os.ReadFile(filepath.Join(repo, "packaging/systemd/handoff@.service"))
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"unknown key": strings.Replace(string(unit), "KillMode=mixed", "KilMode=mixed", 1),
		"bad value":   strings.Replace(string(unit), "Type=notify", "Type=notfy", 1),
	} {
		f := filepath.Join(t.TempDir(), "handoff@.service")
		if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if errs := unitProblems(f, "/usr/bin", t.TempDir()); len(errs) == 0 {
			t.Errorf("%s: systemd-analyze verify found nothing", name)
		}
	}
	f := filepath.Join(t.TempDir(), "handoff@.service")
	if err := os.WriteFile(f, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	if errs := unitProblems(f, "/usr/bin", t.TempDir()); len(errs) != 0 {
		t.Errorf("the real unit: %q", errs)
	}
}

// TestGoreleaserRejects shows the config checks failing on broken copies
// of .goreleaser.yaml, and the version rules matching goreleaser's.
func TestGoreleaserRejects(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repo, ".goreleaser.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "    ldflags:\n", "    ldflag:\n", `unknown field "ldflag"`},
		{"release enabled", "release:\n  disable: true", "release:\n  disable: false", "must not talk to GitHub"},
		{"changelog from GitHub", "changelog:\n  disable: true", "changelog:\n  use: github", `unknown field "use"`},
		{"version 1", "version: 2", "version: 1", "want 2"},
		{"mode as a string", "mode: 0644", "mode: rw-r--r--", "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(src, []byte(tc.old)) {
				t.Fatalf(".goreleaser.yaml no longer contains %q: update the test", tc.old)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ".goreleaser.yaml"), bytes.Replace(src, []byte(tc.old), []byte(tc.new), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := loadGoreleaser(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadGoreleaser: %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
	for in, want := range map[string]string{
		"0.0.1-snapshot+834bb1d": "0.0.1~snapshot+834bb1d", // as nfpm wrote it in goreleaser 2.15.1's snapshot
		"1.2.3":                  "1.2.3",
		"1.2.3-rc.1":             "1.2.3~rc.1",
		"1.2.3+meta":             "1.2.3+meta",
	} {
		if got := debVersion(in); got != want {
			t.Errorf("debVersion(%q) = %q, want %q", in, got, want)
		}
	}
	ri := &releaseInfo{Version: "0.0.0", ShortCommit: "834bb1d"}
	if got, err := render("{{ incpatch .Version }}-snapshot+{{ .ShortCommit }}", ri); err != nil || got != "0.0.1-snapshot+834bb1d" {
		t.Errorf("snapshot version %q, %v; want 0.0.1-snapshot+834bb1d", got, err)
	}
}
