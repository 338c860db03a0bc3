package upgrade

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Spec is one parsed --listen flag: a name and where to listen.
type Spec struct {
	// Name is passed to workers in LISTEN_FDNAMES.
	Name string
	// Network is one of tcp, tcp4, tcp6, unix or udp.
	Network string
	// Address is host:port for IP networks and a path for unix.
	Address string
}

// String renders the spec back in --listen syntax.
func (s Spec) String() string {
	return s.Name + "=" + s.Network + "://" + s.Address
}

// ParseSpec parses NAME=SCHEME://ADDRESS, where SCHEME is tcp, tcp4, tcp6,
// udp or unix. NAME follows systemd's FileDescriptorName= rules: at most 255
// printable ASCII characters, no colon.
func ParseSpec(s string) (Spec, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Spec{}, fmt.Errorf("listen %q: want NAME=SCHEME://ADDRESS, e.g. http=tcp://127.0.0.1:8080", s)
	}
	if err := checkName(name); err != nil {
		return Spec{}, fmt.Errorf("listen %q: %w", s, err)
	}
	scheme, addr, ok := strings.Cut(rest, "://")
	if !ok {
		return Spec{}, fmt.Errorf("listen %q: want SCHEME://ADDRESS after the name, e.g. tcp://127.0.0.1:8080", s)
	}
	spec := Spec{Name: name, Network: scheme, Address: addr}
	switch scheme {
	case "tcp", "tcp4", "tcp6", "udp":
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			// The net error repeats the address raw (a newline and all):
			// the quoted one is enough.
			why := err.Error()
			var ae *net.AddrError
			if errors.As(err, &ae) {
				why = ae.Err
			}
			return Spec{}, fmt.Errorf("listen %q: bad address %q: %s", s, addr, why)
		}
		if _, err := net.LookupPort(scheme, port); err != nil || port == "" {
			return Spec{}, fmt.Errorf("listen %q: bad port %q", s, port)
		}
		if host != "" {
			ip := net.ParseIP(host)
			if ip != nil && scheme == "tcp6" && ip.To4() != nil {
				return Spec{}, fmt.Errorf("listen %q: %s is an IPv4 address, not tcp6", s, host)
			}
			if ip != nil && scheme == "tcp4" && ip.To4() == nil {
				return Spec{}, fmt.Errorf("listen %q: %s is an IPv6 address, not tcp4", s, host)
			}
		}
	case "unix":
		if addr == "" {
			return Spec{}, fmt.Errorf("listen %q: empty unix socket path", s)
		}
		if u, err := url.PathUnescape(addr); err == nil {
			spec.Address = u
		}
		if strings.IndexByte(spec.Address, 0) >= 0 {
			return Spec{}, fmt.Errorf("listen %q: unix socket path contains a NUL byte", s)
		}
		if len(spec.Address) >= 108 {
			return Spec{}, fmt.Errorf("listen %q: unix socket path is %d bytes, the limit is 107", s, len(spec.Address))
		}
	default:
		return Spec{}, fmt.Errorf("listen %q: unknown scheme %q (want tcp, tcp4, tcp6, udp or unix)", s, scheme)
	}
	return spec, nil
}

func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name")
	}
	if len(name) > 255 {
		return fmt.Errorf("name longer than 255 bytes")
	}
	for _, r := range name {
		if r < 0x21 || r > 0x7e || r == ':' {
			return fmt.Errorf("name %q: only printable ASCII without spaces or ':' is allowed", name)
		}
	}
	return nil
}
