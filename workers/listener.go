package workers

import (
	"github.com/handoff-dev/handoff/internal/steer"
)

// Listener is a socket the workers receive, as fd 3, 4, … in the order
// of Config.Listeners, named in LISTEN_FDNAMES.
type Listener struct {
	Name    string
	Network string
	Addr    string
	// Fd is the one socket every worker shares, when Group is nil.
	Fd int
	// Group, if set, gives each slot a socket of its own in each of two
	// banks (generations alternate banks), and the supervisor steers new
	// connections to the sockets of ready workers.
	Group *steer.Group
	// sim stands in for Group under the simulator.
	sim steerGroup
}

// group is the listener's steered group, or nil.
func (l *Listener) group() steerGroup {
	if l.sim != nil {
		return l.sim
	}
	if l.Group != nil {
		return l.Group
	}
	return nil
}

// fd is the descriptor a worker of slot in bank gets.
func (l *Listener) fd(bank, slot int) int {
	if g := l.group(); g != nil {
		return g.Fd(bank, slot)
	}
	return l.Fd
}

// status describes the listener.
// With live, it also counts the sockets on its address that are not the
// master's (a few syscalls: for Status, not for every event).
func (l *Listener) status(live bool) ListenerStatus {
	st := ListenerStatus{Name: l.Name, Network: l.Network, Addr: l.Addr, Balance: "shared"}
	if g := l.group(); g != nil {
		st.Balance = string(g.Mode())
		st.Mechanism = string(g.Mechanism())
		st.Selection = g.Selection()
		if live {
			if n, err := g.Foreign(); err == nil {
				st.Foreign = n
			}
		}
	}
	return st
}
