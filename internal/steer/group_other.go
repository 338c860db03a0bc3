//go:build !linux

package steer

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/upgrade"
)

// Group is a kernel-steered SO_REUSEPORT group. Only Linux has them:
// elsewhere every constructor returns an error wrapping ErrUnsupported.
type Group struct{}

func unsupported(spec upgrade.Spec) error {
	return fmt.Errorf("steer %s: SO_REUSEPORT groups with BPF selectors need Linux: %w", spec, ErrUnsupported)
}

// New returns an error wrapping ErrUnsupported.
func New(spec upgrade.Spec, opts Options) (*Group, error) { return nil, unsupported(spec) }

// Join returns an error wrapping ErrUnsupported; fd stays the caller's.
func Join(spec upgrade.Spec, fd int, opts Options) (*Group, error) { return nil, unsupported(spec) }

// Import closes fds and returns an error wrapping ErrUnsupported.
func Import(st State, fds []int) (*Group, error) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
	return nil, unsupported(st.Spec)
}

// Restore closes socks and sel and returns an error wrapping
// ErrUnsupported.
func Restore(spec upgrade.Spec, opts Options, socks, sel []int) (*Group, error) {
	for _, fd := range append(socks, sel...) {
		syscall.Close(fd)
	}
	return nil, unsupported(spec)
}

// Active returns nothing.
func (g *Group) Active() []Target { return nil }

// Steer fails: there is no group.
func (g *Group) Steer(active []Target) error { return ErrUnsupported }

// Grow fails: there is no group.
func (g *Group) Grow(slots int) error { return ErrUnsupported }

// Fd returns -1.
func (g *Group) Fd(bank, slot int) int { return -1 }

// Addr returns "".
func (g *Group) Addr() string { return "" }

// Spec returns the zero Spec.
func (g *Group) Spec() upgrade.Spec { return upgrade.Spec{} }

// Slots returns 0.
func (g *Group) Slots() int { return 0 }

// Mechanism returns "".
func (g *Group) Mechanism() Mechanism { return "" }

// Mode returns "".
func (g *Group) Mode() Mode { return "" }

// Selection returns "".
func (g *Group) Selection() string { return "" }

// Fallback returns ErrUnsupported.
func (g *Group) Fallback() error { return ErrUnsupported }

// QueueLen fails: there is no group.
func (g *Group) QueueLen(bank, slot int) (int, error) { return 0, ErrUnsupported }

// Held fails: there is no group.
func (g *Group) Held(bank, slot int) (int, error) { return 0, ErrUnsupported }

// LoadAware returns ErrUnsupported.
func (g *Group) LoadAware() error { return ErrUnsupported }

// WaitDrained fails: there is no group.
func (g *Group) WaitDrained(ctx context.Context, bank, slot int, since time.Time, quiet time.Duration) error {
	return ErrUnsupported
}

// Dial fails: there is no group.
func (g *Group) Dial(ctx context.Context, bank, slot int) (net.Conn, error) {
	return nil, ErrUnsupported
}

// Export returns nothing.
func (g *Group) Export() (State, []int) { return State{}, nil }

// Close does nothing.
func (g *Group) Close() error { return nil }

// String returns "".
func (g *Group) String() string { return "" }

// Foreign counts foreign sockets on the group's address: not on this
// platform.
func (g *Group) Foreign() (int, error) { return 0, ErrUnsupported }

// AdoptedSelector reports whether Restore took over a crashed master's
// selector: never here.
func (g *Group) AdoptedSelector() bool { return false }
