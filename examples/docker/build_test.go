//go:build linux

package docker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// image is what the emulated build produced: the final stage's
// filesystem and configuration.
type image struct {
	rootfs      string            // the final stage's filesystem
	base        map[string]string // each stage's FROM image, by stage name or index
	user        string
	entrypoint  []string
	cmd         []string
	env         map[string]string
	expose      []string
	stopSignal  string
	healthcheck bool
	labels      map[string]string
}

// stage is one FROM ... of the build, being built.
type stage struct {
	name    string
	from    string
	root    string // its filesystem
	workdir string
	args    map[string]string
	env     map[string]string
	scratch bool // FROM scratch: an empty filesystem
}

// buildImage runs the Dockerfile in dir against the build context dir,
// with buildArgs (docker build --build-arg), in work (an empty
// directory). Stages FROM an image other than scratch stand for the
// golang image: their RUN commands run on this host with the stage's
// WORKDIR as current directory, and absolute paths in them are the
// host's. COPY and WORKDIR act on the stage's own directory.
func buildImage(ctx context.Context, dir, work string, buildArgs map[string]string) (*image, error) {
	f, err := os.Open(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	instrs, err := parseDockerfile(f)
	if err != nil {
		return nil, fmt.Errorf("Dockerfile: %w", err)
	}
	ign, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	defer ign.Close()
	rules, err := parseDockerignore(ign)
	if err != nil {
		return nil, err
	}
	context := filepath.Join(work, "context")
	if err := os.MkdirAll(context, 0o755); err != nil {
		return nil, err
	}
	if err := copyContext(dir, context, rules); err != nil {
		return nil, fmt.Errorf("copying the build context: %w", err)
	}

	// Docker's automatic platform arguments; the build runs on this host.
	auto := map[string]string{
		"BUILDPLATFORM": "linux/" + runtime.GOARCH, "TARGETPLATFORM": "linux/" + runtime.GOARCH,
		"BUILDOS": "linux", "BUILDARCH": runtime.GOARCH, "TARGETOS": "linux", "TARGETARCH": runtime.GOARCH,
	}
	global := map[string]string{}
	for k, v := range auto {
		global[k] = v
	}
	img := &image{base: map[string]string{}, env: map[string]string{}, labels: map[string]string{}}
	var stages []*stage
	var cur *stage
	vars := func() map[string]string {
		m := map[string]string{}
		for k, v := range cur.args {
			m[k] = v
		}
		for k, v := range cur.env {
			m[k] = v
		}
		return m
	}
	for _, in := range instrs {
		if cur == nil && in.cmd != "ARG" && in.cmd != "FROM" {
			return nil, fmt.Errorf("%v: before the first FROM", in)
		}
		switch in.cmd {
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				name, def, hasDef := strings.Cut(a, "=")
				v, given := buildArgs[name]
				if !given {
					if hasDef {
						v = def
					} else if cur != nil {
						v = global[name]
					}
				}
				if cur == nil {
					global[name] = v
				} else {
					cur.args[name] = v
				}
			}
		case "FROM":
			ref, as, _ := strings.Cut(in.args, " ")
			ref = expand(ref, global)
			s := &stage{from: ref, args: map[string]string{}, env: map[string]string{}, workdir: "/"}
			if as != "" {
				kw, name, _ := strings.Cut(strings.TrimSpace(as), " ")
				if !strings.EqualFold(kw, "AS") || name == "" {
					return nil, fmt.Errorf("%v: want FROM IMAGE [AS NAME]", in)
				}
				s.name = strings.TrimSpace(name)
			}
			if p, ok := in.flags["platform"]; ok && expand(p, global) == "" {
				return nil, fmt.Errorf("%v: --platform expands to nothing", in)
			}
			s.root = filepath.Join(work, fmt.Sprintf("stage%d", len(stages)))
			s.scratch = ref == "scratch"
			if err := os.MkdirAll(s.root, 0o755); err != nil {
				return nil, err
			}
			key := s.name
			if key == "" {
				key = fmt.Sprint(len(stages))
			}
			img.base[key] = ref
			stages = append(stages, s)
			cur = s
		case "WORKDIR":
			wd := expand(in.args, vars())
			if !path.IsAbs(wd) {
				wd = path.Join(cur.workdir, wd)
			}
			cur.workdir = wd
			if err := os.MkdirAll(filepath.Join(cur.root, wd), 0o755); err != nil {
				return nil, err
			}
		case "ENV":
			name, value, ok := strings.Cut(in.args, "=")
			if !ok || strings.ContainsAny(name, " \t") {
				return nil, fmt.Errorf("%v: only ENV NAME=VALUE is supported", in)
			}
			cur.env[name] = expand(strings.Trim(value, `"`), vars())
		case "COPY":
			if err := doCopy(in, cur, stages, context, vars()); err != nil {
				return nil, err
			}
		case "RUN":
			if cur.scratch {
				return nil, fmt.Errorf("%v: RUN in a FROM scratch stage has no shell", in)
			}
			if in.exec != nil {
				return nil, fmt.Errorf("%v: only the shell form of RUN is supported", in)
			}
			cmd := exec.CommandContext(ctx, "/bin/sh", "-c", in.args)
			cmd.Dir = filepath.Join(cur.root, cur.workdir)
			cmd.Env = os.Environ()
			for k, v := range vars() {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.WaitDelay = 5 * time.Second
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("%v: %w\n%s", in, err, out)
			}
		case "LABEL":
			for _, kv := range splitWords(in.args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("%v: only LABEL KEY=VALUE is supported", in)
				}
				img.labels[k] = expand(strings.Trim(v, `"`), vars())
			}
		case "USER":
			img.user = expand(in.args, vars())
		case "EXPOSE":
			img.expose = strings.Fields(in.args)
		case "STOPSIGNAL":
			img.stopSignal = in.args
		case "HEALTHCHECK":
			img.healthcheck = strings.TrimSpace(strings.ToUpper(in.args)) != "NONE"
		case "ENTRYPOINT", "CMD":
			if in.exec == nil {
				return nil, fmt.Errorf("%v: use the exec (JSON) form; the shell form needs /bin/sh", in)
			}
			if in.cmd == "CMD" {
				img.cmd = in.exec
			} else {
				img.entrypoint = in.exec
			}
		default:
			return nil, fmt.Errorf("%v: %s is not supported by this emulation (extend build_test.go)", in, in.cmd)
		}
	}
	if cur == nil {
		return nil, fmt.Errorf("Dockerfile has no FROM")
	}
	img.rootfs = cur.root
	for k, v := range cur.env {
		img.env[k] = v
	}
	return img, nil
}

// doCopy runs one COPY: from the context, or with --from=STAGE from that
// stage's filesystem.
func doCopy(in instruction, cur *stage, stages []*stage, context string, vars map[string]string) error {
	for f := range in.flags {
		if f != "from" {
			return fmt.Errorf("%v: COPY --%s is not supported by this emulation", in, f)
		}
	}
	var words []string
	if in.exec != nil {
		words = in.exec
	} else {
		words = strings.Fields(in.args)
	}
	if len(words) < 2 {
		return fmt.Errorf("%v: want COPY SRC... DEST", in)
	}
	srcs, dest := words[:len(words)-1], expand(words[len(words)-1], vars)
	if !path.IsAbs(dest) {
		dest = path.Join(cur.workdir, dest) + map[bool]string{true: "/"}[strings.HasSuffix(dest, "/") || dest == "."]
	}
	srcRoot, srcBase := context, "/"
	if from, ok := in.flags["from"]; ok {
		var st *stage
		for i, s := range stages[:len(stages)-1] {
			if s.name == from || fmt.Sprint(i) == from {
				st = s
			}
		}
		if st == nil {
			return fmt.Errorf("%v: no earlier stage %q", in, from)
		}
		srcRoot, srcBase = st.root, st.workdir
	}
	for _, src := range srcs {
		src = expand(src, vars)
		if strings.ContainsAny(src, "*?[") {
			return fmt.Errorf("%v: wildcards are not supported by this emulation", in)
		}
		p := src
		if in.flags["from"] != "" && !path.IsAbs(p) {
			p = path.Join(srcBase, p)
		}
		full := filepath.Join(srcRoot, filepath.FromSlash(path.Clean("/"+p)))
		st, err := os.Stat(full)
		if err != nil {
			where := "the build context (after .dockerignore)"
			if in.flags["from"] != "" {
				where = "stage " + in.flags["from"]
			}
			return fmt.Errorf("%v: source %q is not in %s", in, src, where)
		}
		target := filepath.Join(cur.root, filepath.FromSlash(dest))
		if !st.IsDir() && (strings.HasSuffix(dest, "/") || len(srcs) > 1) {
			target = filepath.Join(target, filepath.Base(full))
		}
		if err := copyTree(full, target); err != nil {
			return fmt.Errorf("%v: %w", in, err)
		}
	}
	return nil
}

// splitWords splits on blanks outside double quotes.
func splitWords(s string) []string {
	var out []string
	var b strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			b.WriteRune(r)
		case (r == ' ' || r == '\t') && !quoted:
			if b.Len() > 0 {
				out = append(out, b.String())
				b.Reset()
			}
		default:
			b.WriteRune(r)
		}
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}
