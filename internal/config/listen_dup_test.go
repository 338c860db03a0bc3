package config

import (
	"strings"
	"testing"
)

// An address given to two listeners is a configuration error naming
// both, whether written the same way twice or overlapping through a
// wildcard; a different port, transport or family is not.
func TestListenAddressTwice(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want string // "" for no problem
	}{
		{"a=tcp://127.0.0.1:8080", "b=tcp://127.0.0.1:8080", `--listen "b=tcp://127.0.0.1:8080": address 127.0.0.1:8080 is also listener "a"'s (127.0.0.1:8080)`},
		{"a=tcp://0.0.0.0:8080", "b=tcp://127.0.0.1:8080", `is also listener "a"'s (0.0.0.0:8080)`},
		{"a=tcp://:8080", "b=tcp6://[::1]:8080", `is also listener "a"'s (:8080)`},
		{"a=udp://127.0.0.1:53", "b=udp://127.0.0.1:53", `is also listener "a"'s`},
		{"a=tcp://127.0.0.1:http", "b=tcp://127.0.0.1:80", `is also listener "a"'s`},
		{"a=unix:///tmp/x.sock", "b=unix:///tmp/x.sock", `is also listener "a"'s (/tmp/x.sock)`},
		{"a=tcp://127.0.0.1:0", "b=tcp://127.0.0.1:0", ""},
		{"a=tcp://127.0.0.1:8080", "b=udp://127.0.0.1:8080", ""},
		{"a=tcp://127.0.0.1:8080", "b=tcp://127.0.0.1:8081", ""},
		{"a=tcp://127.0.0.1:8080", "b=tcp://127.0.0.2:8080", ""},
		{"a=tcp4://0.0.0.0:8080", "b=tcp6://[::1]:8080", ""},
	} {
		t.Run(c.a+" "+c.b, func(t *testing.T) {
			_, err := load("", flags([]string{"/bin/sh"}, KeyListen, c.a, KeyListen, c.b), root)
			if c.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			ps := problemsOf(t, err)
			if len(ps) != 1 || !strings.Contains(ps[0].String(), c.want) || ps[0].Runtime {
				t.Fatalf("problems %+v, want one usage problem containing %q", ps, c.want)
			}
		})
	}
}

// In a config file the problem points at the second address.
func TestListenAddressTwiceInFile(t *testing.T) {
	path := writeFile(t, "app.hcl", "command = [\"/bin/sh\"]\nlisten \"a\" { address = \"tcp://127.0.0.1:8080\" }\nlisten \"b\" { address = \"tcp://127.0.0.1:8080\" }\n")
	_, err := load(path, Flags{}, root)
	ps := problemsOf(t, err)
	if len(ps) != 1 || !strings.Contains(ps[0].String(), "app.hcl:3:") || !strings.Contains(ps[0].String(), `listener "a"`) {
		t.Fatalf("problems %+v, want one at app.hcl:3 naming listener \"a\"", ps)
	}
}
