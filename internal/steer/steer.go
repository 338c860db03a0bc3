package steer

import (
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/upgrade"
)

// MaxSlots is the largest number of slots a group may have. The
// supervisor caps workers at 1024; a group of that size holds 2048
// sockets per listener.
const MaxSlots = 1024

// Banks is the number of sockets per slot: bank 0 and bank 1, so that
// an old and a new generation never share a slot's socket.
const Banks = 2

// ErrUnsupported means the listener cannot be a kernel-steered group:
// a unix socket, a socket passed by systemd without SO_REUSEPORT, or a
// kernel that refuses SO_REUSEPORT or every BPF selector. The caller
// should log the error (it says why) and fall back to one shared socket.
var ErrUnsupported = errors.New("kernel-steered SO_REUSEPORT group not possible")

// Mechanism is how the kernel is told which socket gets a connection.
type Mechanism string

const (
	// Auto tries EBPF and falls back to CBPF.
	Auto Mechanism = ""
	// EBPF is a BPF_PROG_TYPE_SK_REUSEPORT program over a
	// REUSEPORT_SOCKARRAY map; the choice changes by map updates.
	EBPF Mechanism = "ebpf"
	// CBPF is a classic BPF program (SO_ATTACH_REUSEPORT_CBPF) that is
	// replaced whenever the choice changes.
	CBPF Mechanism = "cbpf"
)

// Mode is the selection policy.
type Mode string

const (
	// ModeSteer spreads new TCP connections round-robin over the active
	// sockets with eBPF and by flow hash with classic BPF. UDP is always
	// spread by flow hash (per packet round-robin would split a flow).
	ModeSteer Mode = "steer"
	// ModeSticky picks a slot by a hash of the client address alone
	// (hash % slots), then that slot's active socket; if the slot has
	// none, it hashes the client over the active sockets.
	ModeSticky Mode = "sticky"
)

// ParseMode parses "steer" (or "") and "sticky".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", string(ModeSteer):
		return ModeSteer, nil
	case string(ModeSticky):
		return ModeSticky, nil
	}
	return "", fmt.Errorf("unknown steering mode %q (want steer or sticky)", s)
}

// Target names one socket of a group: a slot and its bank (0 or 1).
type Target struct {
	Slot int `json:"slot"`
	Bank int `json:"bank"`
}

// Options configure a new group.
type Options struct {
	// Slots is the number of slots to create, 1..MaxSlots.
	Slots int
	// Mode is the selection policy; empty means ModeSteer.
	Mode Mode
	// Mechanism forces EBPF (fail if it cannot be loaded) or CBPF;
	// Auto (empty) tries eBPF first.
	Mechanism Mechanism
}

// State is what a new master needs, besides the descriptors, to take a
// group over: encode it as JSON next to the descriptors from
// Group.Export.
type State struct {
	Spec      upgrade.Spec `json:"spec"`
	Addr      string       `json:"addr"`
	Slots     int          `json:"slots"`
	Mode      Mode         `json:"mode"`
	Mechanism Mechanism    `json:"mechanism"`
	// Layout is the version of the eBPF program and map layout; a new
	// master with a different one rebuilds them.
	Layout int      `json:"layout,omitempty"`
	Active []Target `json:"active"`
}

// index is the socket's position in the group, in join order: bank 0
// and bank 1 of slot 0, then of slot 1, and so on. It is also the key
// of the socket in the eBPF socket array.
func index(t Target) int { return 2*t.Slot + t.Bank }

// clientHash is the hash of a client address that sticky mode uses,
// computed the same way by the eBPF and the classic program: the
// address as big-endian 32-bit words, each folded in with the murmur3
// finalizer. Tests use it to predict a client's slot.
func clientHash(words []uint32) uint32 {
	var h uint32
	for i, w := range words {
		if i == 0 {
			h = fmix32(w)
			continue
		}
		h = fmix32(h ^ w)
	}
	return h
}

func fmix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// normalize checks a Steer argument against the group's size and returns
// the targets sorted by slot.
func normalize(active []Target, slots int) ([]Target, error) {
	bySlot := make([]int, slots)
	for i := range bySlot {
		bySlot[i] = -1
	}
	for _, t := range active {
		if t.Slot < 0 || t.Slot >= slots {
			return nil, fmt.Errorf("slot %d out of range (the group has %d slots)", t.Slot, slots)
		}
		if t.Bank != 0 && t.Bank != 1 {
			return nil, fmt.Errorf("slot %d: bank %d (want 0 or 1)", t.Slot, t.Bank)
		}
		if bySlot[t.Slot] >= 0 {
			return nil, fmt.Errorf("slot %d named twice (at most one bank per slot is active)", t.Slot)
		}
		bySlot[t.Slot] = t.Bank
	}
	out := make([]Target, 0, len(active))
	for s, b := range bySlot {
		if b >= 0 {
			out = append(out, Target{Slot: s, Bank: b})
		}
	}
	return out, nil
}
