package sockaddr

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestResolve(t *testing.T) {
	for _, c := range []struct {
		network, address string
		family, sotype   int
		v6only           int
		dual             bool
		ip               string // the bound address, as sockaddr's bytes print
		port             int
	}{
		{"tcp", ":8080", unix.AF_INET6, unix.SOCK_STREAM, 0, true, "::", 8080},
		{"tcp", "127.0.0.1:80", unix.AF_INET, unix.SOCK_STREAM, 0, false, "127.0.0.1", 80},
		{"tcp", "[::1]:80", unix.AF_INET6, unix.SOCK_STREAM, 0, false, "::1", 80},
		{"tcp4", ":80", unix.AF_INET, unix.SOCK_STREAM, 0, false, "0.0.0.0", 80},
		{"tcp4", "localhost:http", unix.AF_INET, unix.SOCK_STREAM, 0, false, "127.0.0.1", 80},
		{"tcp6", ":80", unix.AF_INET6, unix.SOCK_STREAM, 1, false, "::", 80},
		{"tcp6", "[::1]:0", unix.AF_INET6, unix.SOCK_STREAM, 1, false, "::1", 0},
		{"udp", "127.0.0.1:53", unix.AF_INET, unix.SOCK_DGRAM, 0, false, "127.0.0.1", 53},
		{"udp", ":domain", unix.AF_INET6, unix.SOCK_DGRAM, 0, true, "::", 53},
	} {
		a, err := Resolve(c.network, c.address)
		if err != nil {
			t.Errorf("Resolve(%s, %s): %v", c.network, c.address, err)
			continue
		}
		ip, port := show(a.Sockaddr)
		if a.Family != c.family || a.Type != c.sotype || a.V6Only != c.v6only || a.DualStack != c.dual || ip != c.ip || port != c.port {
			t.Errorf("Resolve(%s, %s) = family %d type %d v6only %d dual %v %s port %d; want %d %d %d %v %s %d",
				c.network, c.address, a.Family, a.Type, a.V6Only, a.DualStack, ip, port, c.family, c.sotype, c.v6only, c.dual, c.ip, c.port)
		}
	}
}

func TestResolveErrors(t *testing.T) {
	for _, c := range []struct{ network, address, want string }{
		{"unix", "/run/x.sock", `network "unix"`},
		{"udp6", "[::1]:53", `network "udp6"`},
		{"tcp", "127.0.0.1", "missing port"},
		{"tcp", "127.0.0.1:notaport", "unknown port"},
		{"tcp", "host.invalid:80", `resolve "host.invalid"`},
	} {
		_, err := Resolve(c.network, c.address)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Resolve(%s, %s): %v; want an error with %q", c.network, c.address, err, c.want)
		}
	}
}

func TestIPv4Fallback(t *testing.T) {
	a, err := Resolve("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	b := a.IPv4()
	if ip, port := show(b.Sockaddr); b.Family != unix.AF_INET || b.Type != unix.SOCK_STREAM || b.DualStack || ip != "0.0.0.0" || port != 8080 {
		t.Errorf("IPv4() = %+v (%s:%d); want the IPv4 wildcard of port 8080", b, ip, port)
	}
	// Anything but a dual-stack wildcard stays as it is.
	c, err := Resolve("tcp6", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.IPv4(); d.Family != unix.AF_INET6 || d.V6Only != 1 {
		t.Errorf("IPv4() of tcp6 = %+v; want it unchanged", d)
	}
}

func show(sa unix.Sockaddr) (string, int) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netIP(a.Addr[:]), a.Port
	case *unix.SockaddrInet6:
		return netIP(a.Addr[:]), a.Port
	}
	return "?", -1
}

func netIP(b []byte) string { return net.IP(b).String() }
