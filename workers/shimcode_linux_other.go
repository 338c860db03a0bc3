//go:build linux && !amd64 && !arm64

package workers

import "debug/elf"

// No built-in exec shim for this architecture: workers start through
// handoff's own binary (see shim_linux.go).
const (
	shimCode    = ""
	shimMachine = elf.EM_NONE
	isAMD64     = false
)
