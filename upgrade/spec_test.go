package upgrade

import (
	"strings"
	"testing"
)

func TestParseSpecValid(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"http=tcp://127.0.0.1:8080", Spec{"http", "tcp", "127.0.0.1:8080"}},
		{"http=tcp://:8080", Spec{"http", "tcp", ":8080"}},
		{"http=tcp://localhost:0", Spec{"http", "tcp", "localhost:0"}},
		{"http=tcp://127.0.0.1:http", Spec{"http", "tcp", "127.0.0.1:http"}},
		{"a=tcp4://0.0.0.0:65535", Spec{"a", "tcp4", "0.0.0.0:65535"}},
		{"a=tcp6://[::1]:80", Spec{"a", "tcp6", "[::1]:80"}},
		{"a=tcp6://[::]:80", Spec{"a", "tcp6", "[::]:80"}},
		{"a=tcp6://:80", Spec{"a", "tcp6", ":80"}},
		{"dns=udp://127.0.0.1:53", Spec{"dns", "udp", "127.0.0.1:53"}},
		{"sock=unix:///run/app.sock", Spec{"sock", "unix", "/run/app.sock"}},
		{"sock=unix://relative.sock", Spec{"sock", "unix", "relative.sock"}},
		// The path is percent-decoded; an undecodable one is kept as is.
		{"sock=unix:///tmp/a%20b", Spec{"sock", "unix", "/tmp/a b"}},
		{"sock=unix:///tmp/100%", Spec{"sock", "unix", "/tmp/100%"}},
		// Only the first '=' separates the name; the address may hold more.
		{"x=unix:///tmp/a=b", Spec{"x", "unix", "/tmp/a=b"}},
		// Every printable ASCII character but ':' may appear in a name.
		{"!~#$%&'()*+,-./;<>?@[]^_`{|}=tcp://:1", Spec{"!~#$%&'()*+,-./;<>?@[]^_`{|}", "tcp", ":1"}},
		{strings.Repeat("n", 255) + "=tcp://:1", Spec{strings.Repeat("n", 255), "tcp", ":1"}},
		// 107 bytes is the longest path sun_path holds with its NUL.
		{"s=unix:///" + strings.Repeat("p", 106), Spec{"s", "unix", "/" + strings.Repeat("p", 106)}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if err != nil {
				t.Fatalf("ParseSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			// String renders --listen syntax that parses back the same.
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseSpec(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseSpecInvalid(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // substring of the error
		bug     string // set while the case is a known, unfixed bug
	}{
		{"", "want NAME=SCHEME://ADDRESS", ""},
		{"tcp://127.0.0.1:80", "want NAME=SCHEME://ADDRESS", ""},
		{"=tcp://127.0.0.1:80", "empty name", ""},
		{strings.Repeat("n", 256) + "=tcp://:1", "longer than 255", ""},
		{"a b=tcp://:1", "printable ASCII", ""},
		{"a:b=tcp://:1", "printable ASCII", ""},
		{"a\tb=tcp://:1", "printable ASCII", ""},
		{"\x7f=tcp://:1", "printable ASCII", ""},
		{"é=tcp://:1", "printable ASCII", ""},
		{"\xff=tcp://:1", "printable ASCII", ""},
		{"http=127.0.0.1:80", "want SCHEME://ADDRESS", ""},
		{"http=tcp:/127.0.0.1:80", "want SCHEME://ADDRESS", ""},
		{"http=sctp://127.0.0.1:80", "unknown scheme", ""},
		{"http=TCP://127.0.0.1:80", "unknown scheme", ""},
		{"http=://127.0.0.1:80", "unknown scheme", ""},
		{"http=tcp://127.0.0.1", "bad address", ""},
		{"http=tcp://::1:80", "bad address", ""},
		{"http=tcp://", "bad address", ""},
		{"http=tcp://127.0.0.1:", "bad port", ""},
		{"http=tcp://127.0.0.1:65536", "bad port", ""},
		{"http=tcp://127.0.0.1:-1", "bad port", ""},
		{"http=tcp://127.0.0.1:nosuchservice", "bad port", ""},
		{"http=udp://127.0.0.1:", "bad port", ""},
		{"http=tcp6://127.0.0.1:80", "IPv4 address, not tcp6", ""},
		{"http=tcp6://[::ffff:127.0.0.1]:80", "IPv4 address, not tcp6", ""},
		{"http=tcp4://[::1]:80", "IPv6 address, not tcp4", ""},
		{"s=unix:///tmp/a%00b", "NUL byte", ""},
		{"s=unix://", "empty unix socket path", ""},
		{"s=unix:///" + strings.Repeat("p", 107), "the limit is 107", ""},
		// The limit applies to the decoded path: 3 escaped bytes are 1.
		{"s=unix:///" + strings.Repeat("%70", 107), "the limit is 107", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if tt.bug != "" {
				t.Skip("known bug: " + tt.bug)
			}
			got, err := ParseSpec(tt.in)
			if err == nil {
				t.Fatalf("ParseSpec(%q) = %+v, want an error containing %q", tt.in, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseSpec(%q) error %q does not contain %q", tt.in, err, tt.wantErr)
			}
			if got != (Spec{}) {
				t.Fatalf("ParseSpec(%q) returned %+v with its error, want the zero Spec", tt.in, got)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"http=tcp://127.0.0.1:8080",
		"http=tcp://:0",
		"a=tcp6://[::1]:80",
		"a=tcp4://0.0.0.0:1",
		"dns=udp://127.0.0.1:domain",
		"s=unix:///run/x.sock",
		"s=unix:///tmp/a%20b",
		"s=unix:///tmp/%zz",
		"s=unix://",
		"=tcp://:1",
		"a=b=c://d",
		"a=tcp://[::1",
		"a=tcp://[fe80::1%eth0]:80",
		"x",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseSpec(s)
		if err != nil {
			if spec != (Spec{}) {
				t.Fatalf("ParseSpec(%q) returned %+v with error %v", s, spec, err)
			}
			return
		}
		if err := checkName(spec.Name); err != nil {
			t.Fatalf("ParseSpec(%q) accepted name %q: %v", s, spec.Name, err)
		}
		switch spec.Network {
		case "tcp", "tcp4", "tcp6", "udp":
			if s != spec.Name+"="+spec.Network+"://"+spec.Address {
				t.Fatalf("ParseSpec(%q) = %+v: the address is not the input's", s, spec)
			}
		case "unix":
			if spec.Address == "" || len(spec.Address) > 107 {
				t.Fatalf("ParseSpec(%q) accepted unix path of %d bytes", s, len(spec.Address))
			}
		default:
			t.Fatalf("ParseSpec(%q) accepted network %q", s, spec.Network)
		}
		// A decoded unix path that still holds '%' may decode again; any
		// other spec renders back to itself.
		if spec.Network != "unix" || !strings.Contains(spec.Address, "%") {
			again, err := ParseSpec(spec.String())
			if err != nil || again != spec {
				t.Fatalf("ParseSpec(%q) = %+v, but its String %q parses as %+v, %v", s, spec, spec.String(), again, err)
			}
		}
	})
}
