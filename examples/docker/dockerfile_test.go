//go:build linux

package docker_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// This file reads a Dockerfile and a .dockerignore, and emulates the
// part of 'docker build' that the repository's Dockerfile uses, without
// a container engine: the context as .dockerignore leaves it, every
// stage's filesystem in a directory of its own, and the build stage's RUN
// commands run on this host (which stands in for the golang image: same
// Go, same Debian). It supports the instructions that Dockerfile uses
// and fails on any other, so a new instruction needs a matching change
// here.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line  int               // where it starts, 1-based
	cmd   string            // upper case: FROM, RUN, ...
	flags map[string]string // --name=value flags (FROM, COPY)
	args  string            // the rest, as written
	exec  []string          // the rest in JSON (exec) form, if it is
}

func (in instruction) String() string {
	return fmt.Sprintf("line %d: %s %s", in.line, in.cmd, in.args)
}

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, lines ending in a backslash joined with the next
// (the backslash and newline removed, as Docker does).
func parseDockerfile(r io.Reader) ([]instruction, error) {
	var out []instruction
	sc := bufio.NewScanner(r)
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue // also inside a continuation, as Docker does
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(strings.TrimRight(line, " \t"), `\`) {
			l := strings.TrimRight(line, " \t")
			cur.WriteString(l[:len(l)-1])
			continue
		}
		cur.WriteString(line)
		in, err := parseInstruction(start, cur.String())
		if err != nil {
			return nil, err
		}
		out = append(out, in)
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() != 0 {
		return nil, fmt.Errorf("line %d: continuation at end of file", start)
	}
	return out, nil
}

func parseInstruction(line int, s string) (instruction, error) {
	s = strings.TrimSpace(s)
	cmd, rest, _ := strings.Cut(s, " ")
	in := instruction{line: line, cmd: strings.ToUpper(cmd), flags: map[string]string{}}
	rest = strings.TrimSpace(rest)
	if in.cmd == "FROM" || in.cmd == "COPY" {
		for strings.HasPrefix(rest, "--") {
			var flag string
			flag, rest, _ = strings.Cut(rest, " ")
			rest = strings.TrimSpace(rest)
			name, value, ok := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
			if !ok {
				return in, fmt.Errorf("line %d: flag %q has no =value", line, flag)
			}
			in.flags[name] = value
		}
	}
	in.args = rest
	if strings.HasPrefix(rest, "[") {
		var v []string
		if err := json.Unmarshal([]byte(rest), &v); err == nil {
			in.exec = v
		} else if in.cmd == "CMD" || in.cmd == "ENTRYPOINT" {
			return in, fmt.Errorf("line %d: %s looks like exec form but is not a JSON string array: %v", line, in.cmd, err)
		}
	}
	return in, nil
}

// expand replaces $NAME and ${NAME} with vars (empty when unset), as
// Docker does in FROM, COPY, LABEL and the like.
func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(name string) string { return vars[name] })
}

// ignoreRule is one .dockerignore line.
type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

// parseDockerignore reads .dockerignore: one pattern a line, '#'
// comments, '!' to re-include, '*', '?' and '**' wildcards. A pattern
// that matches a directory excludes everything under it.
func parseDockerignore(r io.Reader) ([]ignoreRule, error) {
	var rules []ignoreRule
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		rule := ignoreRule{}
		if strings.HasPrefix(p, "!") {
			rule.negate = true
			p = strings.TrimSpace(p[1:])
		}
		p = path.Clean(strings.TrimPrefix(filepath.ToSlash(p), "/"))
		if strings.ContainsAny(p, "[\\") {
			return nil, fmt.Errorf(".dockerignore pattern %q: character classes and escapes are not supported by this emulation", p)
		}
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				b.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				b.WriteString(".*")
				i++
			case p[i] == '*':
				b.WriteString("[^/]*")
			case p[i] == '?':
				b.WriteString("[^/]")
			default:
				b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		b.WriteString("(/.*)?$")
		re, err := regexp.Compile(b.String())
		if err != nil {
			return nil, fmt.Errorf(".dockerignore pattern %q: %w", p, err)
		}
		rule.re = re
		rules = append(rules, rule)
	}
	return rules, sc.Err()
}

// excluded says whether rel (slash-separated, relative to the context)
// is left out of the context: the last rule that matches decides.
func excluded(rules []ignoreRule, rel string) bool {
	ex := false
	for _, r := range rules {
		if r.re.MatchString(rel) {
			ex = !r.negate
		}
	}
	return ex
}

// copyContext copies the build context at src to dst, leaving out what
// the rules exclude.
func copyContext(src, dst string, rules []ignoreRule) error {
	negations := false
	for _, r := range rules {
		negations = negations || r.negate
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if excluded(rules, filepath.ToSlash(rel)) {
			if d.IsDir() && !negations {
				return filepath.SkipDir
			}
			return nil
		}
		return copyEntry(p, filepath.Join(dst, rel), d)
	})
}

// copyTree copies src (a directory's contents, or a file) to dst, keeping
// modes (sticky bit included) and making everything owned by 0:0, as
// COPY does without --chown. As in Docker, the mode of a copied
// directory itself is not kept, only that of what is in it.
func copyTree(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return copyEntry(src, dst, fs.FileInfoToDirEntry(st))
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		return copyEntry(p, filepath.Join(dst, rel), d)
	})
}

// copyEntry copies one file, directory or symlink (not a directory's
// contents), keeping its mode, owned by 0:0.
func copyEntry(src, dst string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	mode := info.Mode()
	perm := mode & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	switch {
	case mode.IsDir():
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		os.Remove(dst)
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		return chownRoot(dst)
	case mode.IsRegular():
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: cannot copy a %v", src, mode.Type())
	}
	if err := chownRoot(dst); err != nil {
		return err
	}
	return os.Chmod(dst, perm)
}

// chownRoot makes path owned by 0:0, as COPY does, when this process may
// (the tests that need the ownership skip when not root).
func chownRoot(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Lchown(path, 0, 0)
}
