//go:build !linux

package upgrade

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrAddressInUse means another socket listens on (or, for UDP, is bound
// to) an address that overlaps the one asked for.
var ErrAddressInUse = errors.New("address in use")

// CheckFree is a no-op outside Linux: the bind of the socket itself
// reports a conflict.
func CheckFree(sotype, v6only int, sa unix.Sockaddr) error { return nil }

// InUse is the error for an address that another socket holds.
func InUse(sotype, v6only int, sa unix.Sockaddr, ours []uint64) error {
	return fmt.Errorf("address %v is already in use by another socket: %w", sa, ErrAddressInUse)
}

// SocketInode is the inode number of the socket fd.
func SocketInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("fstat: %w", err)
	}
	return st.Ino, nil
}

// Overlapping needs /proc/net: not supported outside Linux.
func Overlapping(sotype, v6only int, sa unix.Sockaddr) ([]uint64, error) {
	return nil, errors.New("listing sockets needs Linux's /proc/net")
}

// Owners needs /proc: it finds nothing outside Linux.
func Owners(inodes []uint64) string { return "" }
