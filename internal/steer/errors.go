package steer

import "errors"

// ErrClosed is returned by Foreign once the group is closed.
var ErrClosed = errors.New("group closed")
