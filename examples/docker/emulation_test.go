//go:build linux

package docker_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerignore pins the .dockerignore matching the emulation uses,
// against Docker's documented rules.
func TestDockerignore(t *testing.T) {
	rules, err := parseDockerignore(strings.NewReader(`# comment
.git
**/*.test
bin
/dist
docs/*.md
!docs/keep.md
x?z
`))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		".git":               true,
		".git/config":        true,
		".github":            false,
		"a.test":             true,
		"cmd/x/x.test":       true,
		"testdata/x.testing": false,
		"bin":                true,
		"bin/handoff":        true,
		"cmd/bin":            false,
		"dist/x.deb":         true,
		"docs/a.md":          true,
		"docs/keep.md":       false,
		"docs/sub/a.md":      false,
		"xyz":                true,
		"xyyz":               false,
		"go.mod":             false,
	} {
		if got := excluded(rules, path); got != want {
			t.Errorf("excluded(%q) = %v, want %v", path, got, want)
		}
	}
	if _, err := parseDockerignore(strings.NewReader("[ab]c\n")); err == nil {
		t.Error("a character class was accepted; the emulation does not implement them")
	}
}

// TestBuildRejects checks that the emulated build fails on Dockerfiles
// that a real build would reject, or that would break the image: so a
// passing TestImage means something.
func TestBuildRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		dockerfile, ignore, want string
	}{
		"source excluded by .dockerignore": {
			"FROM scratch\nCOPY secret.txt /\n", "secret.txt\n", `source "secret.txt" is not in the build context`,
		},
		"source missing": {
			"FROM scratch\nCOPY nothere /\n", "", `source "nothere" is not in the build context`,
		},
		"copy from a stage that is not there": {
			"FROM scratch AS a\nFROM scratch\nCOPY --from=b /x /\n", "", `no earlier stage "b"`,
		},
		"copy of a file the stage did not make": {
			"FROM golang:1 AS build\nWORKDIR /src\nFROM scratch\nCOPY --from=build /src/out/x /\n", "", `source "/src/out/x" is not in stage build`,
		},
		"failing RUN": {
			"FROM golang:1\nRUN exit 3\n", "", "exit status 3",
		},
		"RUN without a shell": {
			"FROM scratch\nRUN true\n", "", "no shell",
		},
		"shell-form ENTRYPOINT": {
			"FROM scratch\nENTRYPOINT /usr/local/bin/handoff run\n", "", "exec (JSON) form",
		},
		"broken exec form": {
			"FROM scratch\nCMD [\"--listen\", \n", "", "not a JSON string array",
		},
		"instruction the emulation lacks": {
			"FROM scratch\nADD https://example.com/x /x\n", "", "ADD is not supported",
		},
		"dangling continuation": {
			"FROM scratch\nCMD [\"x\"] \\\n", "", "continuation at end of file",
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, filepath.Join(dir, "Dockerfile"), tc.dockerfile)
			write(t, filepath.Join(dir, ".dockerignore"), tc.ignore)
			write(t, filepath.Join(dir, "secret.txt"), "x")
			_, err := buildImage(context.Background(), dir, t.TempDir(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("buildImage: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestBuildStages checks ARG scoping and COPY between stages on a small
// Dockerfile, as Docker documents them.
func TestBuildStages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: COPY makes files owned by 0:0")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "Dockerfile"), `ARG BASE=golang:1
ARG V=global
FROM $BASE AS build
ARG V
ARG W=stage
WORKDIR /src
COPY in.txt ./
RUN mkdir -p out/tmp && chmod 1777 out/tmp && echo "$V $W $TARGETOS" > out/v.txt && cat in.txt >> out/v.txt
FROM scratch
COPY --from=build /src/out/ /
USER 1:2
CMD ["a", \
     "b"]
`)
	write(t, filepath.Join(dir, ".dockerignore"), "")
	write(t, filepath.Join(dir, "in.txt"), "context\n")
	img, err := buildImage(context.Background(), dir, t.TempDir(), map[string]string{"W": "given"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(img.rootfs, "v.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// V: the global default, taken by a bare ARG in the stage. W: the
	// build argument over the default. TARGETOS: not declared in the
	// stage, so empty.
	if got, want := string(b), "global given \ncontext\n"; got != want {
		t.Errorf("v.txt = %q, want %q", got, want)
	}
	st, err := os.Stat(filepath.Join(img.rootfs, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp: %v, %v; want the sticky bit kept", st, err)
	}
	if img.base["build"] != "golang:1" || img.user != "1:2" || strings.Join(img.cmd, " ") != "a b" {
		t.Errorf("base %q, user %q, cmd %q", img.base, img.user, img.cmd)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
