// Package sockaddr resolves a listen address into what socket(2) and
// bind(2) take. upgrade's listeners and steer's groups both bind with raw
// syscalls (so that the Go runtime's poller never sees their sockets), and
// both must read "HOST:PORT" the way net.Listen does: a name resolves to
// its first address of the wanted family, and no host means the dual-stack
// wildcard, or IPv4's where the host has no IPv6.
//
// It is not a stable library API.
package sockaddr

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Addr is a resolved listen address.
type Addr struct {
	Family   int // unix.AF_INET or unix.AF_INET6
	Type     int // unix.SOCK_STREAM or unix.SOCK_DGRAM
	V6Only   int // the IPV6_V6ONLY option for an AF_INET6 socket: 1 for tcp6, else 0
	Sockaddr unix.Sockaddr
	// DualStack is true for an address without a host whose network is
	// not tcp4 or tcp6: an AF_INET6 wildcard that also takes IPv4.
	DualStack bool
}

// Resolve resolves address ("HOST:PORT", "[HOST]:PORT" or ":PORT") for
// network, which is tcp, tcp4, tcp6 or udp. It returns an error for
// another network, an address without a port, a port or host that does
// not resolve, and a host without an address of the network's family.
func Resolve(network, address string) (Addr, error) {
	return resolve(network, address, net.LookupIP)
}

// resolve is Resolve with the name lookup given.
func resolve(network, address string, lookupIP func(string) ([]net.IP, error)) (Addr, error) {
	var a Addr
	switch network {
	case "tcp", "tcp4", "tcp6":
		a.Type = unix.SOCK_STREAM
	case "udp":
		a.Type = unix.SOCK_DGRAM
	default:
		return a, fmt.Errorf("network %q (want tcp, tcp4, tcp6 or udp)", network)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return a, err
	}
	lookup := "tcp"
	if a.Type == unix.SOCK_DGRAM {
		lookup = "udp"
	}
	port, err := net.LookupPort(lookup, portStr)
	if err != nil {
		return a, err
	}
	var ip net.IP
	if host != "" {
		if ip = net.ParseIP(host); ip == nil {
			ips, err := lookupIP(host)
			if err != nil {
				return a, fmt.Errorf("resolve %q: %w", host, err)
			}
			if len(ips) == 0 {
				return a, fmt.Errorf("resolve %q: no address", host)
			}
			if ip = pickIP(ips, network); ip == nil {
				return a, fmt.Errorf("resolve %q: no %s address", host, network)
			}
		}
		// An address of the other family, as net.Listen refuses it.
		if v4 := ip.To4() != nil; network == "tcp4" && !v4 || network == "tcp6" && v4 {
			return a, fmt.Errorf("%s is not a %s address", host, network)
		}
	}
	switch {
	case network == "tcp6", ip != nil && ip.To4() == nil, ip == nil && network != "tcp4":
		sa := &unix.SockaddrInet6{Port: port}
		if ip != nil {
			copy(sa.Addr[:], ip.To16())
		}
		a.Family, a.Sockaddr = unix.AF_INET6, sa
		if network == "tcp6" {
			a.V6Only = 1
		}
		a.DualStack = ip == nil && network != "tcp6"
	default:
		sa := &unix.SockaddrInet4{Port: port}
		if ip != nil {
			copy(sa.Addr[:], ip.To4())
		}
		a.Family, a.Sockaddr = unix.AF_INET, sa
	}
	return a, nil
}

// IPv4 is the IPv4 wildcard of a dual-stack address, to bind on a host
// without IPv6 (where socket(AF_INET6) fails with EAFNOSUPPORT). It
// returns a itself for any other address.
func (a Addr) IPv4() Addr {
	sa, ok := a.Sockaddr.(*unix.SockaddrInet6)
	if !a.DualStack || !ok {
		return a
	}
	return Addr{Family: unix.AF_INET, Type: a.Type, Sockaddr: &unix.SockaddrInet4{Port: sa.Port}}
}

// pickIP is the first of ips of network's family; for tcp and udp the
// first IPv4 one, else the first.
func pickIP(ips []net.IP, network string) net.IP {
	for _, ip := range ips {
		if (ip.To4() != nil) == (network != "tcp6") {
			return ip
		}
	}
	if network == "tcp" || network == "udp" {
		return ips[0]
	}
	return nil
}
