package systemd

import (
	"strconv"
	"strings"
	"testing"
)

func FuzzParseActivation(f *testing.F) {
	const self = 4242
	for _, c := range [][3]string{
		{"4242", "2", "http:dns"},
		{"4242", "1", ""},
		{"4242", "3", "a::c"},
		{"4242", "2", "a:b:c"},
		{"4242", "0", ""},
		{"4242", "+1", "x"},
		{"4242", "-1", ""},
		{"4242", "4097", ""},
		{"4242", "99999999999999999999", ""},
		{"04242", "1", "a"},
		{"1", "1", "a"},
		{"", "", ""},
	} {
		f.Add(c[0], c[1], c[2])
	}
	f.Fuzz(func(t *testing.T, pid, fds, names string) {
		socks, err := parseActivation(pid, fds, names, self)
		if err != nil {
			if socks != nil {
				t.Fatalf("parseActivation(%q, %q, %q) = %v with error %v", pid, fds, names, socks, err)
			}
			if len(err.Error()) > 250 { // 40 bytes of the value, quoted
				t.Fatalf("error of %d bytes: %.250s…", len(err.Error()), err)
			}
			return
		}
		if socks == nil {
			if pid == strconv.Itoa(self) && fds != "" {
				t.Fatalf("parseActivation(%q, %q, %q): no sockets and no error for this process", pid, fds, names)
			}
			return
		}
		n, aerr := strconv.Atoi(fds)
		if pid != strconv.Itoa(self) || aerr != nil || n != len(socks) || n > maxActivationFds {
			t.Fatalf("parseActivation(%q, %q, %q) = %d sockets", pid, fds, names, len(socks))
		}
		split := strings.Split(names, ":")
		for i, s := range socks {
			if s.Fd != 3+i || s.Name == "" || strings.Contains(s.Name, ":") {
				t.Fatalf("socket %d: %+v", i, s)
			}
			if i < len(split) && split[i] != "" && s.Name != split[i] {
				t.Fatalf("socket %d named %q, LISTEN_FDNAMES says %q", i, s.Name, split[i])
			}
		}
		// Round trip: the names rendered back as LISTEN_FDNAMES give the
		// same sockets.
		out := make([]string, len(socks))
		for i, s := range socks {
			out[i] = s.Name
		}
		again, err := parseActivation(pid, strconv.Itoa(len(socks)), strings.Join(out, ":"), self)
		if err != nil || len(again) != len(socks) {
			t.Fatalf("round trip: %v, %v", again, err)
		}
		for i := range again {
			if again[i] != socks[i] {
				t.Fatalf("round trip: socket %d %+v, was %+v", i, again[i], socks[i])
			}
		}
	})
}
