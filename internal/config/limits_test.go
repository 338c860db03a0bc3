package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bombs are config files that crashed or stalled the master on reload
// before the caps of limits.go (issue 17), and their kin: each must fail
// to load with one problem naming the file and line.
func bombs() []struct{ name, file, text, want string } {
	ok := "command = [\"/bin/sh\"]\n"
	nums := make([]string, 9)
	for i := range nums {
		nums[i] = string(rune('1' + i))
	}
	tuple := "[" + strings.Join(nums, ",") + "]"
	forBomb := "1"
	for i := range 8 {
		forBomb = "[for v" + string(rune('a'+i)) + " in " + tuple + ": " + forBomb + "]"
	}
	return []struct{ name, file, text, want string }{
		{"nested brackets", "app.hcl", ok + "workers = " + strings.Repeat("[", 100000) + "\n", "app.hcl:2:75: nested more than 64 deep"},
		{"nested parens", "app.hcl", ok + "workers = " + strings.Repeat("(", 100000) + "1\n", "app.hcl:2:75: nested more than 64 deep"},
		{"nested templates", "app.hcl", ok + "admin = " + strings.Repeat(`"${`, 50000) + "\n", "app.hcl:2:"},
		{"unmatched closers", "app.hcl", ok + "admin = " + strings.Repeat(`[)`, 50000) + "\n", "app.hcl:2:"},
		{"negations", "app.hcl", ok + "workers = " + strings.Repeat("!", 200000) + "true\n", "app.hcl:2:75: more than 64 operators"},
		{"minuses", "app.hcl", ok + "workers = " + strings.Repeat("- ", 100000) + "1\n", "more than 64 operators"},
		{"conditionals", "app.hcl", ok + "workers = " + strings.Repeat("true ? 1 : ", 20000) + "1\n", "more than 64 operators"},
		{"splats", "app.hcl", ok + "workers = [1]" + strings.Repeat("[*]", 80000) + "\n", "app.hcl:2:207: more than 64 operators"},
		{"attribute splats", "app.hcl", ok + "workers = a" + strings.Repeat(".*", 100000) + "\n", "more than 64 operators"},
		{"directives", "app.hcl", ok + "admin = \"" + strings.Repeat("%{if true}", 20000) + "\"\n", "more than 64 operators"},
		{"huge exponent", "app.hcl", ok + "workers = 1e300000000\n", "app.hcl:2:11: number 1e300000000: its exponent is out of range"},
		{"tiny exponent", "app.hcl", ok + "workers = 1e-300000000\n", "app.hcl:2:11: number 1e-300000000: its exponent is out of range"},
		{"exponent overflow", "app.hcl", ok + "workers = 1e99999999999999999999\n", "its exponent is out of range"},
		{"long number", "app.hcl", ok + "environment = { A = " + strings.Repeat("9", 100000) + " }\n", "app.hcl:2:21: number 999999999999… is longer than 32 characters"},
		{"env exponent", "app.hcl", ok + "environment = { A = 1e300000000 }\n", "app.hcl:2:21: number 1e300000000"},
		{"for product", "app.hcl", ok + "workers = " + forBomb + "\n", "app.hcl:2:11: workers: want a constant"},
		{"template for", "app.hcl", ok + "admin = \"%{for a in [1,2]}x%{endfor}\"\n", "app.hcl:2:9: admin: want a constant"},
		{"arithmetic", "app.hcl", ok + "workers = " + strings.Repeat("1e32*", 40) + "1\n", "app.hcl:2:11: workers: want a constant"},
		{"env arithmetic", "app.hcl", ok + "environment = { A = 1 + 1 }\n", "app.hcl:2:21: environment: want a constant"},
		{"listen conditional", "app.hcl", ok + "listen \"a\" { address = true ? \"tcp://:1\" : \"\" }\n", "app.hcl:2:24: address: want a constant"},
		{"too large", "app.hcl", ok + "# " + strings.Repeat("x", MaxFileSize) + "\n", "is larger than 262144 bytes"},
		{"json nested", "app.json", `{"command": ` + strings.Repeat("[", 100000), "app.json:1:76: nested more than 64 deep"},
		{"json huge exponent", "app.json", `{"command": ["/bin/sh"], "workers": 1e300000000}`, "app.json:1:37: number 1e300000000"},
		{"json long number", "app.json", "{\"command\": [\"/bin/sh\"],\n\"environment\": {\"A\": -" + strings.Repeat("1", 1000) + "}}", "app.json:2:22: number -11111111111… is longer"},
	}
}

func TestConfigBombs(t *testing.T) {
	for _, c := range bombs() {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.file, c.text)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := load(path, Flags{}, root)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("loaded")
			}
			ps := problemsOf(t, err)
			got := strings.TrimPrefix(ps[0].String(), filepath.Dir(path)+"/")
			if len(ps) != 1 || !strings.Contains(got, c.want) {
				t.Fatalf("problems %q, want one containing %q", err, c.want)
			}
			// Reported, not asserted: timing depends on the machine.
			t.Logf("%s: %v, %d MiB allocated: %s", c.name, took, (after.TotalAlloc-before.TotalAlloc)>>20, got)
		})
	}
}

// A file larger than the cap is refused without reading it whole, even
// when it never ends.
func TestConfigEndless(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip(err)
	}
	_, err := load("/dev/zero", Flags{}, root)
	if ps := problemsOf(t, err); len(ps) != 1 || !strings.Contains(ps[0].Msg, "config file: /dev/zero is larger than 262144 bytes") {
		t.Errorf("problems %+v", ps)
	}
}

// What the caps let through: constants in every form a key takes, nested
// a little, and numbers at the limits.
func TestConfigWithinCaps(t *testing.T) {
	text := "command = [\"/bin/sh\", \"-c\", \"echo $((1+2)) ${x}\"]\n" +
		"workers = (((3)))\n" +
		"retire_parallel = 1e0\n" +
		"max_memory = \"1GiB\"\n" +
		"environment = {\n  A = -1\n  B = 1e32\n  (\"C\") = \"x\"\n  D = <<EOT\nline\nEOT\n  E = " + strings.Repeat("1", MaxNumberLen) + "\n}\n"
	text = strings.ReplaceAll(text, "${x}", "$${x}")
	path := writeFile(t, "app.hcl", text)
	o, err := load(path, Flags{}, root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=-1", "B=1" + strings.Repeat("0", 32), "C=x", "D=line\n", "E=" + strings.Repeat("1", MaxNumberLen)}
	if strings.Join(o.Environment, "|") != strings.Join(want, "|") || o.Workers != 3 || o.RetireParallel != 1 || o.Command[2] != "echo $((1+2)) ${x}" {
		t.Errorf("got %q, %d workers, %d retire_parallel, command %q", o.Environment, o.Workers, o.RetireParallel, o.Command)
	}
	deep := "command = [\"/bin/sh\"]\nenvironment = { A = " + strings.Repeat("(", MaxNesting-2) + "\"x\"" + strings.Repeat(")", MaxNesting-2) + " }\n"
	if _, err := load(writeFile(t, "deep.hcl", deep), Flags{}, root); err != nil {
		t.Errorf("%d levels: %v", MaxNesting, err)
	}
	if _, err := load(writeFile(t, "deeper.hcl", strings.Replace(deep, "(", "((", 1)), Flags{}, root); err == nil || !strings.Contains(err.Error(), "deeper.hcl:2:84: nested more than 64 deep") {
		t.Errorf("%d levels: %v", MaxNesting+1, err)
	}
}
