package config

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/workers"
)

// checkProblems fails unless every problem is one non-empty line.
func checkProblems(t *testing.T, in any, ps []Problem) {
	t.Helper()
	for _, p := range ps {
		if p.Msg == "" || strings.ContainsAny(p.String(), "\n\r") {
			t.Fatalf("%q: problem %q is not one line", in, p.String())
		}
	}
}

// FuzzLoadFile feeds bytes to the config file reader, as HCL and as JSON,
// and validates what they hold: whatever the bytes, the load returns
// (the caps of limits.go bound its time and memory), never panics, and
// says what is wrong in one line a problem.
func FuzzLoadFile(f *testing.F) {
	for _, s := range []string{
		fullFile("/tmp/fuzz-api.sock"),
		"command = [\"/bin/sh\"]\nworkers = 2\n",
		"command = [\"/bin/sh\"]\nenvironment = { A = 1, B = \"x\", (\"C\") = -1.5 }\n",
		"listen \"a\" {\n  address = \"unix:///tmp/a.sock\"\n  mode = \"0660\"\n}\n",
		"workers = " + strings.Repeat("[", 70) + "\n",
		"workers = 1e300000000\n",
		"admin = \"${a}\"\n",
		"admin = <<EOT\nx\nEOT\n",
		"workers = [for a in [1,2]: a]\n",
		"workers = true ? 1 : 2\n",
		`{"command": ["/bin/sh"], "workers": 2, "listen": {"a": {"address": "tcp://:0"}}}`,
		`{"workers": 1e99999}`,
		`{"command": [[[[[]]]]]}`,
		"",
	} {
		f.Add([]byte(s), strings.HasPrefix(s, "{"))
	}
	f.Fuzz(func(t *testing.T, src []byte, json bool) {
		path := "fuzz.hcl"
		if json {
			path = "fuzz.json"
		}
		var p problems
		r := &raw{scalars: map[string]value{}}
		ok := parseBytes(src, path, r, &p)
		checkProblems(t, src, p.list)
		if !ok {
			if len(p.list) == 0 {
				t.Fatalf("%q: refused without a problem", src)
			}
			return
		}
		validate(r, root, &p)
		checkProblems(t, src, p.list)
		if len(p.list) > MaxProblems {
			t.Fatalf("%q: %d problems listed, more than %d", src, len(p.list), MaxProblems)
		}
	})
}

// FuzzListenFlag loads --listen values: the flag's own syntax, then
// upgrade.ParseSpec and the unix socket options.
func FuzzListenFlag(f *testing.F) {
	for _, s := range []string{
		"http=tcp://127.0.0.1:8080",
		"api=unix:///tmp/api.sock?mode=0660&owner=nobody&group=nogroup",
		"api=unix:///tmp/api.sock?mode=0660&mode=0600",
		"api=unix:///tmp/api.sock?x=1",
		"api=unix://@abstract?mode=0660",
		"a=tcp://:0?mode=0660",
		"a=udp://[::1]:53",
		"a=tcp6://1.2.3.4:1",
		"a=unix:///tmp/%zz",
		"noequals",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := load("", flags([]string{"/bin/sh"}, KeyListen, s), root)
		if err != nil {
			ps := problemsOf(t, err)
			checkProblems(t, s, ps)
			return
		}
		if len(o.Listen) != 1 {
			t.Fatalf("--listen %q: %d listeners", s, len(o.Listen))
		}
		// The listener renders back to a --listen that loads the same.
		l := o.Listen[0]
		again, err := load("", flags([]string{"/bin/sh"}, KeyListen, l.Spec.String()), root)
		if l.Network != "unix" && (err != nil || again.Listen[0].Spec != l.Spec) {
			t.Fatalf("--listen %q loads as %+v, its String %q as %+v, %v", s, l.Spec, l.Spec.String(), again, err)
		}
	})
}

func FuzzParseWorkers(f *testing.F) {
	for _, s := range []string{"auto", "1", "4", "1024", "1025", "0", "-1", "+3", "03", "1e3", " 2", "", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, auto, err := parseWorkers(s, 7)
		if err != nil {
			if n != 0 || auto {
				t.Fatalf("parseWorkers(%q) = %d, %v with error %v", s, n, auto, err)
			}
			return
		}
		if auto != (s == "auto") || auto && n != 7 || n < 1 || n > workers.MaxWorkers {
			t.Fatalf("parseWorkers(%q) = %d, %v", s, n, auto)
		}
		if again, _, err := parseWorkers(strconv.Itoa(n), 7); !auto && (err != nil || again != n) {
			t.Fatalf("parseWorkers(%q) = %d, but %d parses as %d, %v", s, n, n, again, err)
		}
		if c, err := parseCount(s); !auto && (err != nil || c != n) {
			t.Fatalf("parseCount(%q) = %d, %v; parseWorkers said %d", s, c, err, n)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "512MiB", "1.5GiB", "800MB", "1G", "2 GiB", "1048576", "1048575", "1kB", "9999999TiB", "1e9", "-1G", ".5G", "NaNG", "Inf", "0x10M", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseSize(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n != 0 && n < minMemory || n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		// Parse, format as bytes, parse: the same size.
		if again, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || again != n {
			t.Fatalf("ParseSize(%q) = %d, but %d parses as %d, %v", s, n, n, again, err)
		}
	})
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"SIGTERM", "TERM", "term", "quit", "SIGRTMIN", "9", "64", "65", "0", "-1", "sig", "", "SIGsigterm"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := ParseSignal(s)
		if err != nil {
			if sig != 0 {
				t.Fatalf("ParseSignal(%q) = %d with error %v", s, sig, err)
			}
			return
		}
		if sig < 1 || sig > 64 {
			t.Fatalf("ParseSignal(%q) = %d", s, sig)
		}
		if again, err := ParseSignal(strconv.Itoa(int(sig))); err != nil || again != sig {
			t.Fatalf("ParseSignal(%q) = %d, but %d parses as %d, %v", s, sig, sig, again, err)
		}
		if name := unix.SignalName(sig); name != "" {
			if again, err := ParseSignal(name); err != nil || again != sig {
				t.Fatalf("ParseSignal(%q) = %d (%s), but %s parses as %d, %v", s, sig, name, name, again, err)
			}
		}
	})
}

// formatReady renders r back in --ready syntax.
func formatReady(r Ready) string {
	switch r.Mode {
	case ReadyDelay:
		return "delay=" + r.Delay.String()
	case ReadyHTTP:
		return "http=" + r.Path
	}
	return string(r.Mode)
}

func FuzzParseReady(f *testing.F) {
	for _, s := range []string{"notify", "tcp", "delay=2s", "delay=0", "delay=-1s", "http=/healthz", "http=/a?b=c", "http=//x", "http=/a b", "http=/%zz", "notify=1", "delay=", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReady(s)
		if err != nil {
			if r != (Ready{}) {
				t.Fatalf("ParseReady(%q) = %+v with error %v", s, r, err)
			}
			return
		}
		switch r.Mode {
		case ReadyNotify, ReadyTCP:
		case ReadyDelay:
			if r.Delay <= 0 {
				t.Fatalf("ParseReady(%q): delay %v", s, r.Delay)
			}
		case ReadyHTTP:
			if !strings.HasPrefix(r.Path, "/") {
				t.Fatalf("ParseReady(%q): path %q", s, r.Path)
			}
		default:
			t.Fatalf("ParseReady(%q): mode %q", s, r.Mode)
		}
		if again, err := ParseReady(formatReady(r)); err != nil || again != r {
			t.Fatalf("ParseReady(%q) = %+v, but %q parses as %+v, %v", s, r, formatReady(r), again, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "1m30s", "500ms", "0", "0s", "-1s", "25", "1.5h", "9999999999h", "1e3s", "", "s"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, allowZero bool) {
		d, err := parseDuration(s, allowZero)
		if err != nil {
			if d != 0 {
				t.Fatalf("parseDuration(%q) = %v with error %v", s, d, err)
			}
			return
		}
		if d < 0 || d == 0 && !allowZero {
			t.Fatalf("parseDuration(%q, %v) = %v", s, allowZero, d)
		}
		if again, err := parseDuration(d.String(), allowZero); err != nil || again != d {
			t.Fatalf("parseDuration(%q) = %v, but %q parses as %v, %v", s, d, d.String(), again, err)
		}
	})
}

func FuzzParseAdmin(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9100", "[::1]:9100", ":9100", "localhost:0", "host-a.example:65535", "x:65536", "x:-1", "-x:1", "[fe80::1%eth0]:1", "1.2.3.4", "", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ParseAdmin(s); err != nil {
			if len(err.Error()) > 80+len(s)*6 {
				t.Fatalf("ParseAdmin(%q): error of %d bytes", s, len(err.Error()))
			}
			return
		}
		if s == "" {
			return
		}
		if _, port, err := splitHostPort(s); err != nil || port < 0 || port > 65535 {
			t.Fatalf("ParseAdmin accepted %q: port %d, %v", s, port, err)
		}
	})
}

func splitHostPort(s string) (string, int, error) {
	i := strings.LastIndexByte(s, ':')
	p, err := strconv.Atoi(s[i+1:])
	return s[:i], p, err
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"0660", "660", "0777", "0444", "1777", "66", "0o660", "", "-0660"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseMode(s)
		if err != nil {
			return
		}
		if m > 0o777 || m&0o222 == 0 {
			t.Fatalf("parseMode(%q) = %o", s, m)
		}
		if again, err := parseMode(fmt.Sprintf("%04o", m)); err != nil || again != m {
			t.Fatalf("parseMode(%q) = %o, formatted back: %o, %v", s, m, again, err)
		}
	})
}
