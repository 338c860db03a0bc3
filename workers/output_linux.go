package workers

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// pipe opens one output pipe: the read end for forward, in the
// runtime's poller; the write end, a plain blocking descriptor, for the
// child (a non-blocking stdout would break programs that do not expect
// EAGAIN).
func pipe() (r *os.File, w int, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, fmt.Errorf("output pipe: %w", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, fmt.Errorf("output pipe: %w", err)
	}
	return os.NewFile(uintptr(p[0]), "worker output"), p[1], nil
}
