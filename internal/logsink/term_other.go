//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package logsink

// isTerminal is not known here: no colour.
func isTerminal(fd uintptr) bool { return false }
