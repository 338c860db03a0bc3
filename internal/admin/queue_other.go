//go:build !linux

package admin

import "errors"

// socketQueue is Linux-only.
func socketQueue(fd int) (int, error) {
	return 0, errors.New("accept queues are measured on Linux only")
}
