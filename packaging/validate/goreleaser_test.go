package validate

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"
)

// This file reads .goreleaser.yaml and builds what 'goreleaser release
// --snapshot' would from it, without goreleaser (a 26-minute install
// from an empty module cache on this machine, see packaging/README.md):
// cross-built binaries, tar.gz archives, .deb packages (with dpkg-deb)
// and checksums.txt, in goreleaser's file names. It understands only the
// keys the file uses: the config is decoded strictly, so a new key fails
// here until the emulation learns it.

// grConfig is the part of goreleaser's configuration (version 2) that
// the emulation implements.
type grConfig struct {
	Version     int    `json:"version"`
	ProjectName string `json:"project_name"`
	Before      struct {
		Hooks []string `json:"hooks"`
	} `json:"before"`
	Builds   []grBuild   `json:"builds"`
	Archives []grArchive `json:"archives"`
	Checksum struct {
		NameTemplate string `json:"name_template"`
	} `json:"checksum"`
	Snapshot struct {
		VersionTemplate string `json:"version_template"`
	} `json:"snapshot"`
	NFPMs     []grNFPM `json:"nfpms"`
	Changelog struct {
		Disable bool `json:"disable"`
	} `json:"changelog"`
	Release struct {
		Disable bool `json:"disable"`
	} `json:"release"`
}

type grBuild struct {
	ID           string   `json:"id"`
	Main         string   `json:"main"`
	Binary       string   `json:"binary"`
	Env          []string `json:"env"`
	Goos         []string `json:"goos"`
	Goarch       []string `json:"goarch"`
	Flags        []string `json:"flags"`
	Ldflags      []string `json:"ldflags"`
	ModTimestamp string   `json:"mod_timestamp"`
}

type grArchive struct {
	ID           string   `json:"id"`
	IDs          []string `json:"ids"`
	Formats      []string `json:"formats"`
	NameTemplate string   `json:"name_template"`
	Files        []grFile `json:"files"`
}

// grFile is an archive file: a glob, or {src, strip_parent}.
type grFile struct {
	Src         string `json:"src"`
	StripParent bool   `json:"strip_parent"`
}

func (f *grFile) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &f.Src)
	}
	type plain grFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode((*plain)(f))
}

type grNFPM struct {
	ID               string      `json:"id"`
	IDs              []string    `json:"ids"`
	PackageName      string      `json:"package_name"`
	FileNameTemplate string      `json:"file_name_template"`
	Formats          []string    `json:"formats"`
	Vendor           string      `json:"vendor"`
	Homepage         string      `json:"homepage"`
	Maintainer       string      `json:"maintainer"`
	Description      string      `json:"description"`
	License          string      `json:"license"`
	Section          string      `json:"section"`
	Priority         string      `json:"priority"`
	Bindir           string      `json:"bindir"`
	Contents         []grContent `json:"contents"`
	Scripts          struct {
		Postinstall string `json:"postinstall"`
		Postremove  string `json:"postremove"`
	} `json:"scripts"`
}

type grContent struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Type     string `json:"type"`
	FileInfo struct {
		Mode uint32 `json:"mode"`
	} `json:"file_info"`
}

// loadGoreleaser decodes .goreleaser.yaml strictly and checks that it
// cannot reach out to GitHub or anywhere else.
func loadGoreleaser(repo string) (*grConfig, error) {
	b, err := os.ReadFile(filepath.Join(repo, ".goreleaser.yaml"))
	if err != nil {
		return nil, err
	}
	var c grConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf(".goreleaser.yaml: %w (the emulation in goreleaser_test.go knows only the keys it uses)", err)
	}
	if c.Version != 2 {
		return nil, fmt.Errorf(".goreleaser.yaml: version %d, want 2", c.Version)
	}
	if !c.Release.Disable || !c.Changelog.Disable {
		return nil, fmt.Errorf(".goreleaser.yaml: release.disable and changelog.disable must be true: the release must not talk to GitHub")
	}
	if len(c.Builds) != 1 || len(c.Archives) != 1 || len(c.NFPMs) != 1 {
		return nil, fmt.Errorf(".goreleaser.yaml: the emulation handles one build, one archive and one nfpm")
	}
	return &c, nil
}

// releaseInfo is what goreleaser's templates see.
type releaseInfo struct {
	ProjectName, Version, Tag, ShortCommit, FullCommit, CommitTimestamp string
}

// gitInfo computes the snapshot version as goreleaser does: the last tag
// (v0.0.0 without one), then the snapshot version_template.
func gitInfo(repo string, c *grConfig) (*releaseInfo, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	ri := &releaseInfo{ProjectName: c.ProjectName}
	var err error
	if ri.FullCommit, err = git("rev-parse", "HEAD"); err != nil {
		return nil, fmt.Errorf("git rev-parse HEAD: %w", err)
	}
	if ri.ShortCommit, err = git("rev-parse", "--short=7", "HEAD"); err != nil {
		return nil, err
	}
	if ri.CommitTimestamp, err = git("log", "-1", "--format=%ct"); err != nil {
		return nil, err
	}
	if ri.Tag, err = git("describe", "--tags", "--abbrev=0"); err != nil || ri.Tag == "" {
		ri.Tag = "v0.0.0"
	}
	ri.Version = strings.TrimPrefix(ri.Tag, "v")
	v, err := render(c.Snapshot.VersionTemplate, ri)
	if err != nil {
		return nil, fmt.Errorf("snapshot.version_template: %w", err)
	}
	ri.Version = v
	return ri, nil
}

// render expands a goreleaser template: fields of data, plus incpatch.
func render(tmpl string, data any) (string, error) {
	t, err := template.New("").Option("missingkey=error").Funcs(template.FuncMap{
		"incpatch": func(v string) (string, error) {
			parts := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
			if len(parts) != 3 {
				return "", fmt.Errorf("incpatch %q: not MAJOR.MINOR.PATCH", v)
			}
			n, err := strconv.Atoi(parts[2])
			if err != nil {
				return "", fmt.Errorf("incpatch %q: %w", v, err)
			}
			return fmt.Sprintf("%s.%s.%d", parts[0], parts[1], n+1), nil
		},
	}).Parse(tmpl)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// snapshot builds the release into dist, the way 'goreleaser release
// --snapshot --skip=publish' would, and returns the version it built.
func snapshot(repo, dist string, c *grConfig, logf func(string, ...any)) (*releaseInfo, error) {
	ri, err := gitInfo(repo, c)
	if err != nil {
		return nil, err
	}
	for _, h := range c.Before.Hooks {
		f := strings.Fields(h)
		cmd := exec.Command(f[0], f[1:]...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("before hook %q: %w\n%s", h, err, out)
		}
	}
	b := c.Builds[0]
	ts, err := strconv.ParseInt(ri.CommitTimestamp, 10, 64)
	if err != nil {
		return nil, err
	}
	mtime := time.Unix(ts, 0)
	var checksums []string
	for _, goos := range b.Goos {
		for _, goarch := range b.Goarch {
			start := time.Now()
			bin := filepath.Join(dist, fmt.Sprintf("%s_%s_%s", b.ID, goos, goarch), b.Binary)
			var ldflags []string
			for _, l := range b.Ldflags {
				s, err := render(l, ri)
				if err != nil {
					return nil, fmt.Errorf("ldflags %q: %w", l, err)
				}
				ldflags = append(ldflags, s)
			}
			args := append([]string{"build"}, b.Flags...)
			args = append(args, "-ldflags", strings.Join(ldflags, " "), "-o", bin, b.Main)
			cmd := exec.Command("go", args...)
			cmd.Dir = repo
			cmd.Env = append(append(os.Environ(), b.Env...), "GOOS="+goos, "GOARCH="+goarch)
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("go %s (%s/%s): %w\n%s", strings.Join(args, " "), goos, goarch, err, out)
			}
			if b.ModTimestamp != "" {
				if err := os.Chtimes(bin, mtime, mtime); err != nil {
					return nil, err
				}
			}
			logf("built %s/%s in %v", goos, goarch, time.Since(start).Round(time.Millisecond))
			data := map[string]string{"ProjectName": ri.ProjectName, "Version": ri.Version, "Os": goos, "Arch": goarch, "PackageName": c.NFPMs[0].PackageName}

			name, err := render(c.Archives[0].NameTemplate, data)
			if err != nil {
				return nil, err
			}
			tgz := filepath.Join(dist, name+".tar.gz")
			if err := writeArchive(tgz, repo, bin, c.Archives[0], mtime); err != nil {
				return nil, fmt.Errorf("archive %s: %w", name, err)
			}
			name, err = render(c.NFPMs[0].FileNameTemplate, data)
			if err != nil {
				return nil, err
			}
			deb := filepath.Join(dist, name+".deb")
			if err := writeDeb(deb, repo, bin, goarch, ri.Version, c.NFPMs[0], mtime); err != nil {
				return nil, fmt.Errorf("deb %s: %w", name, err)
			}
			checksums = append(checksums, tgz, deb)
		}
	}
	var sums strings.Builder
	sort.Strings(checksums)
	for _, f := range checksums {
		h, err := fileSHA256(f)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&sums, "%s  %s\n", h, filepath.Base(f))
	}
	name, err := render(c.Checksum.NameTemplate, ri)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dist, name), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(map[string]string{"project_name": ri.ProjectName, "tag": ri.Tag, "version": ri.Version, "commit": ri.FullCommit})
	return ri, os.WriteFile(filepath.Join(dist, "metadata.json"), meta, 0o644)
}

// archiveFiles expands an archive's files: path in the archive -> file.
func archiveFiles(repo string, a grArchive) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range a.Files {
		matches, err := filepath.Glob(filepath.Join(repo, f.Src))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("files: %q matches nothing", f.Src)
		}
		for _, m := range matches {
			rel, err := filepath.Rel(repo, m)
			if err != nil {
				return nil, err
			}
			if f.StripParent {
				rel = filepath.Base(rel)
			}
			out[filepath.ToSlash(rel)] = m
		}
	}
	return out, nil
}

func writeArchive(name, repo, bin string, a grArchive, mtime time.Time) error {
	if len(a.Formats) != 1 || a.Formats[0] != "tar.gz" {
		return fmt.Errorf("formats %q: the emulation makes tar.gz only", a.Formats)
	}
	files, err := archiveFiles(repo, a)
	if err != nil {
		return err
	}
	files[filepath.Base(bin)] = bin
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := addTarFile(tw, n, files[n], mtime); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return os.WriteFile(name, buf.Bytes(), 0o644)
}

func addTarFile(tw *tar.Writer, name, src string, mtime time.Time) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(st.Mode().Perm()), Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg, Uname: "root", Gname: "root"}); err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
}

// debArch maps GOARCH to Debian's architecture names.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf", "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}

// debVersion turns a semantic version into a Debian one as nfpm does: a
// pre-release sorts before its release (~), build metadata stays (+).
func debVersion(v string) string {
	base, meta, _ := strings.Cut(v, "+")
	if ver, pre, ok := strings.Cut(base, "-"); ok {
		base = ver + "~" + pre
	}
	if meta != "" {
		return base + "+" + meta
	}
	return base
}

// writeDeb builds one .deb with dpkg-deb from the nfpm section.
func writeDeb(name, repo, bin, goarch, version string, n grNFPM, mtime time.Time) error {
	if len(n.Formats) != 1 || n.Formats[0] != "deb" {
		return fmt.Errorf("formats %q: the emulation makes deb only", n.Formats)
	}
	arch, ok := debArch[goarch]
	if !ok {
		return fmt.Errorf("no Debian architecture for GOARCH %s", goarch)
	}
	tree, err := os.MkdirTemp(filepath.Dir(name), "deb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	var md5s []string
	size := int64(0)
	put := func(dst, src string, mode os.FileMode) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		p := filepath.Join(tree, filepath.FromSlash(dst))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
		size += int64(len(b))
		sum := md5.Sum(b)
		md5s = append(md5s, hex.EncodeToString(sum[:])+"  "+strings.TrimPrefix(dst, "/"))
		return os.Chtimes(p, mtime, mtime)
	}
	if err := put(path.Join(n.Bindir, filepath.Base(bin)), bin, 0o755); err != nil {
		return err
	}
	for _, c := range n.Contents {
		mode := os.FileMode(c.FileInfo.Mode)
		switch c.Type {
		case "dir":
			if mode == 0 {
				mode = 0o755
			}
			p := filepath.Join(tree, filepath.FromSlash(c.Dst))
			if err := os.MkdirAll(p, mode); err != nil {
				return err
			}
			if err := os.Chmod(p, mode); err != nil {
				return err
			}
		case "":
			if mode == 0 {
				mode = 0o644
			}
			if err := put(c.Dst, filepath.Join(repo, c.Src), mode); err != nil {
				return err
			}
		default:
			return fmt.Errorf("contents type %q: the emulation knows files and dirs only", c.Type)
		}
	}
	ctl := filepath.Join(tree, "DEBIAN")
	if err := os.MkdirAll(ctl, 0o755); err != nil {
		return err
	}
	sort.Strings(md5s)
	if err := os.WriteFile(filepath.Join(ctl, "md5sums"), []byte(strings.Join(md5s, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	for script, src := range map[string]string{"postinst": n.Scripts.Postinstall, "postrm": n.Scripts.Postremove} {
		if src == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ctl, script), b, 0o755); err != nil {
			return err
		}
	}
	var desc strings.Builder
	lines := strings.Split(strings.TrimSpace(n.Description), "\n")
	desc.WriteString(lines[0])
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) == "" {
			l = "."
		}
		desc.WriteString("\n " + l)
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nSection: %s\nPriority: %s\nArchitecture: %s\nMaintainer: %s\nInstalled-Size: %d\nHomepage: %s\nDescription: %s\n",
		n.PackageName, debVersion(version), n.Section, n.Priority, arch, n.Maintainer, (size+1023)/1024, n.Homepage, desc.String())
	if err := os.WriteFile(filepath.Join(ctl, "control"), []byte(control), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, name)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(mtime.Unix(), 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb: %w\n%s", err, out)
	}
	return nil
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
