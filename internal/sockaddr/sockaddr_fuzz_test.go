package sockaddr

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeLookup answers a name lookup without asking DNS (a fuzzer would
// send it thousands of random names): by the name's length, an IPv4
// address, an IPv6 one, both, or no such host.
func fakeLookup(name string) ([]net.IP, error) {
	var ips []net.IP
	if len(name)%3 != 0 {
		ips = append(ips, net.IPv4(127, 0, 0, byte(len(name))))
	}
	if len(name)%2 == 0 {
		ips = append(ips, net.ParseIP("fd00::"+strconv.Itoa(len(name))))
	}
	if len(ips) == 0 {
		return nil, errors.New("no such host")
	}
	return ips, nil
}

func TestResolveWrongFamily(t *testing.T) {
	for _, c := range [][2]string{{"tcp4", "[::1]:80"}, {"tcp6", "127.0.0.1:80"}, {"tcp6", "[::ffff:127.0.0.1]:80"}} {
		if _, err := Resolve(c[0], c[1]); err == nil || !strings.Contains(err.Error(), "is not a "+c[0]+" address") {
			t.Errorf("Resolve(%s, %s): %v", c[0], c[1], err)
		}
	}
	// A name with addresses of the other family only.
	if _, err := resolve("tcp6", "a:1", fakeLookup); err == nil || !strings.Contains(err.Error(), `resolve "a": no tcp6 address`) {
		t.Errorf("v4-only name for tcp6: %v", err)
	}
}

func FuzzResolve(f *testing.F) {
	for _, c := range [][2]string{
		{"tcp", ":8080"}, {"tcp", "127.0.0.1:80"}, {"tcp", "[::1]:80"}, {"tcp4", ":http"},
		{"tcp6", "[::]:0"}, {"udp", ":domain"}, {"udp", "name:53"}, {"tcp4", "ab:1"},
		{"tcp6", "abcd:1"}, {"tcp", "abc:1"}, {"tcp", "[fe80::1%eth0]:1"}, {"tcp", "1.2.3.4:65536"},
		{"tcp", "[::ffff:1.2.3.4]:1"}, {"unix", "/x"}, {"tcp", ""},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, network, address string) {
		a, err := resolve(network, address, fakeLookup)
		if err != nil {
			return
		}
		check(t, network, address, a)
		host, _, _ := net.SplitHostPort(address)
		ip, port := addrOf(a)
		if lit := net.ParseIP(host); lit != nil && !lit.Equal(ip) {
			t.Fatalf("Resolve(%s, %s) bound %s", network, address, ip)
		}
		// Round trip: the address bound, as HOST:PORT, resolves the same.
		again := net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if a.DualStack {
			again = ":" + strconv.Itoa(port)
		}
		b, err := resolve(network, again, fakeLookup)
		if err != nil {
			t.Fatalf("Resolve(%s, %s) = %s, which does not resolve: %v", network, address, again, err)
		}
		ip2, port2 := addrOf(b)
		if b.Family != a.Family || b.Type != a.Type || b.V6Only != a.V6Only || b.DualStack != a.DualStack || !ip2.Equal(ip) || port2 != port {
			t.Fatalf("Resolve(%s, %s) = %+v, but %s resolves to %+v", network, address, a, again, b)
		}
	})
}

// check asserts what holds of every address Resolve returns.
func check(t *testing.T, network, address string, a Addr) {
	t.Helper()
	wantType := unix.SOCK_STREAM
	if network == "udp" {
		wantType = unix.SOCK_DGRAM
	}
	ip, port := addrOf(a)
	switch {
	case network != "tcp" && network != "tcp4" && network != "tcp6" && network != "udp":
		t.Fatalf("Resolve accepted network %q", network)
	case a.Type != wantType:
		t.Fatalf("Resolve(%s, %s): type %d", network, address, a.Type)
	case ip == nil:
		t.Fatalf("Resolve(%s, %s): family %d with %T", network, address, a.Family, a.Sockaddr)
	case port < 0 || port > 65535:
		t.Fatalf("Resolve(%s, %s): port %d", network, address, port)
	case network == "tcp4" && a.Family != unix.AF_INET, network == "tcp6" && a.Family != unix.AF_INET6:
		t.Fatalf("Resolve(%s, %s): family %d", network, address, a.Family)
	case (a.V6Only == 1) != (network == "tcp6") || a.V6Only != 0 && a.V6Only != 1:
		t.Fatalf("Resolve(%s, %s): V6Only %d", network, address, a.V6Only)
	case a.DualStack && (a.Family != unix.AF_INET6 || !ip.IsUnspecified() || network == "tcp6"):
		t.Fatalf("Resolve(%s, %s): dual stack %+v", network, address, a)
	}
	if v4 := a.IPv4(); a.DualStack && v4.Family != unix.AF_INET || !a.DualStack && v4.Family != a.Family {
		t.Fatalf("Resolve(%s, %s).IPv4() = %+v", network, address, v4)
	}
}

// addrOf is the IP and port of a's socket address (nil for a family that
// does not match it).
func addrOf(a Addr) (net.IP, int) {
	switch sa := a.Sockaddr.(type) {
	case *unix.SockaddrInet4:
		if a.Family == unix.AF_INET {
			return net.IP(bytes.Clone(sa.Addr[:])), sa.Port
		}
	case *unix.SockaddrInet6:
		if a.Family == unix.AF_INET6 {
			return net.IP(bytes.Clone(sa.Addr[:])), sa.Port
		}
	}
	return nil, -1
}
