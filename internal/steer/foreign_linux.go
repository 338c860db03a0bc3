//go:build linux

package steer

import (
	"fmt"
	"slices"

	"github.com/handoff-dev/handoff/upgrade"
)

// Foreign counts the sockets in this network namespace that take traffic
// for the group's address but are not the group's: a socket of another
// process that joined its SO_REUSEPORT group (same address, same user),
// or one on an overlapping address (a wildcard and a specific address on
// the same port). Such a socket receives the connections the kernel
// gives it outside the group's selector, or shares the group's hash
// where the selector declines to choose, and none of the group's workers
// ever accepts them. TCP counts listening sockets, UDP unconnected bound
// ones, read from /proc/net; the group's own sockets are recognised by
// inode, so copies held by workers, by a previous master, or by systemd
// are not foreign. An IPv6 wildcard socket is not counted against an
// IPv4 group (/proc/net does not say whether it is dual-stack). After
// Close it returns an error wrapping ErrClosed.
func (g *Group) Foreign() (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, fmt.Errorf("steer %s: %w", g.spec, ErrClosed)
	}
	inodes, _, err := g.foreign()
	if err != nil {
		return 0, fmt.Errorf("steer %s: %w", g.spec, err)
	}
	return len(inodes), nil
}

// foreign lists the inodes of the foreign sockets on the group's address,
// and of the group's own sockets. g.mu is held.
func (g *Group) foreign() (foreign, ours []uint64, err error) {
	ours = make([]uint64, 0, len(g.fds))
	for _, fd := range g.fds {
		ino, err := upgrade.SocketInode(fd)
		if err != nil {
			return nil, nil, err
		}
		ours = append(ours, ino)
	}
	all, err := upgrade.Overlapping(g.sotype, g.v6only, g.sa)
	if err != nil {
		return nil, nil, err
	}
	for _, ino := range all {
		if !slices.Contains(ours, ino) {
			foreign = append(foreign, ino)
		}
	}
	return foreign, ours, nil
}

// checkAlone fails if a foreign socket took traffic for the group's
// address while the group was built (between CheckFree and the first
// bind): the same error as CheckFree's, naming who holds it.
func (g *Group) checkAlone() error {
	foreign, ours, err := g.foreign()
	if err != nil || len(foreign) == 0 {
		return nil // best effort: CheckFree has run
	}
	return upgrade.InUse(g.sotype, g.v6only, g.sa, ours)
}
