package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// One load reports every problem of a file: unknown keys and bad values
// together, the values before a syntax error along with it, every number
// beyond the caps; the first MaxProblems of them, then a count.
func TestFileEveryProblem(t *testing.T) {
	ok := "command = [\"/bin/sh\"]\n"
	for _, c := range []struct {
		name, file, text string
		want             []string
	}{
		{"keys and values", "app.hcl", ok + "workers = \"lots\"\nbogus = 1\nbalance = \"fair\"\nlisten \"a\" {\n  address = \"tcp://127.0.0.1:0\"\n  backlog = 5\n}\nuser = \"no-such-user-here\"\n", []string{
			`app.hcl:3:1: Unsupported argument: An argument named "bogus" is not expected here.`,
			`app.hcl:7:3: Unsupported argument: An argument named "backlog" is not expected here.`,
			`app.hcl:2:11: workers = "lots": want auto`,
			`app.hcl:4:11: balance = "fair": want steer, sticky or shared`,
			`app.hcl:9:8: user = "no-such-user-here": no such user`,
		}},
		{"values before a syntax error", "app.hcl", ok + "workers = 0\nbalance = \"fair\"\nready_timeout = \nmin_uptime = \"x\"\n", []string{
			`app.hcl:4:17: Invalid expression`,
			`app.hcl:2:11: workers = 0: want auto or a number from 1 to 1024`,
			`app.hcl:3:11: balance = "fair": want steer, sticky or shared`,
		}},
		{"caps", "app.hcl", ok + "workers = 1e99\nbalance = 1e99\nenvironment = { A = " + strings.Repeat("9", 40) + " }\n", []string{
			`app.hcl:2:11: number 1e99: its exponent is out of range`,
			`app.hcl:3:11: number 1e99: its exponent is out of range`,
			`app.hcl:4:21: number 999999999999… is longer than 32 characters`,
		}},
		{"json caps", "app.json", `{"command": ["/bin/sh"], "workers": 1e99, "balance": 1e99}`, []string{
			`app.json:1:37: number 1e99`,
			`app.json:1:54: number 1e99`,
		}},
		{"value in a listen block", "app.hcl", ok + "listen \"a\" { address = 1 + 1 }\nworkers = 0\n", []string{
			`app.hcl:2:24: address: want a constant`,
			`app.hcl:3:11: workers = 0: want auto`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.file, c.text)
			_, err := load(path, Flags{}, root)
			ps := problemsOf(t, err)
			var got []string
			for _, p := range ps {
				got = append(got, strings.TrimPrefix(p.String(), filepath.Dir(path)+"/"))
			}
			if len(got) != len(c.want) {
				t.Fatalf("problems:\n%s\nwant %d:\n%s", strings.Join(got, "\n"), len(c.want), strings.Join(c.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("problem %d:\n%s\nwant it to start with\n%s", i, got[i], c.want[i])
				}
			}
		})
	}
}

// A file with more problems than MaxProblems lists that many and counts
// the rest, also when they are caps exceeded (which are checked on every
// token: a file of them must stay as cheap as a file of one).
func TestFileProblemsBounded(t *testing.T) {
	var values, numbers strings.Builder
	values.WriteString("command = [\"/bin/sh\"]\nenvironment = {\n")
	for i := range MaxProblems + 7 {
		fmt.Fprintf(&values, "  LISTEN_PID%d = \"x\"\n  \"A=%d\" = \"x\"\n", i, i)
	}
	values.WriteString("}\n")
	numbers.WriteString(`{"command": ["/bin/sh"], "environment": {`)
	n := 0
	for numbers.Len() < MaxFileSize-64 {
		fmt.Fprintf(&numbers, `"A%d": 1e99, `, n)
		n++
	}
	numbers.WriteString(`"Z": 1}}`)
	for _, c := range []struct {
		name, file, text string
		more             int
		last             string
	}{
		{"values", "app.hcl", values.String(), 2*(MaxProblems+7) - MaxProblems, `: a variable name cannot contain`},
		{"json numbers", "app.json", numbers.String(), n - MaxProblems, `number 1e99: its exponent is out of range`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(writeFile(t, c.file, c.text), Flags{}, root)
			ps := problemsOf(t, err)
			ce := err.(*Error)
			lines := strings.Split(err.Error(), "\n")
			if len(ps) != MaxProblems || ce.More != c.more || len(lines) != MaxProblems+1 ||
				lines[MaxProblems] != fmt.Sprintf("and %d more problems", c.more) || !strings.Contains(lines[MaxProblems-1], c.last) || !ce.Usage() {
				t.Fatalf("%d problems, %d more (want %d), error:\n%s", len(ps), ce.More, c.more, err)
			}
		})
	}
}
