//go:build linux

package steer

import (
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// Classic BPF constants of uapi linux/filter.h that golang.org/x/sys
// does not define.
const (
	skfNetOff = -0x100000 // SKF_NET_OFF: loads relative to the network header
)

// Opcodes used below (BPF_CLASS | BPF_SIZE/BPF_OP | BPF_MODE/BPF_SRC).
const (
	ldW    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	ldB    = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	ldMem  = unix.BPF_LD | unix.BPF_MEM
	ldHInd = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
	ldHAbs = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
	ldxMsh = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
	ldxImm = unix.BPF_LDX | unix.BPF_IMM
	stMem  = unix.BPF_ST
	tax    = unix.BPF_MISC | unix.BPF_TAX
	rshK   = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K
	lshK   = unix.BPF_ALU | unix.BPF_LSH | unix.BPF_K
	addK   = unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K
	mulK   = unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K
	modK   = unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K
	xorX   = unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X
	ja     = unix.BPF_JMP | unix.BPF_JA
	jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	jgtK   = unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K
	jgeK   = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	retK   = unix.BPF_RET | unix.BPF_K
	retA   = unix.BPF_RET | unix.BPF_A
	maxIns = unix.BPF_MAXINSNS
)

// off converts a (possibly negative) load offset to the k field.
func off(o int32) uint32 { return uint32(o) }

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

// cfmix is fmix32 on the accumulator (X is scratch).
func cfmix() []unix.SockFilter {
	return []unix.SockFilter{
		stmt(tax, 0), stmt(rshK, 16), stmt(xorX, 0),
		stmt(mulK, 0x85ebca6b),
		stmt(tax, 0), stmt(rshK, 13), stmt(xorX, 0),
		stmt(mulK, 0xc2b2ae35),
		stmt(tax, 0), stmt(rshK, 16), stmt(xorX, 0),
	}
}

// table appends a lookup of the accumulator, a key: key k returns group
// index idx[k]; a key with idx[k] < 0, or beyond idx, falls through to
// the instruction after the table. Keys whose indices step by 2 (a run
// of consecutive slots in one bank) share one block of at most five
// instructions: A > hi or A < lo skips the block, else return 2A + c.
func table(p []unix.SockFilter, idx []int) []unix.SockFilter {
	for lo := 0; lo < len(idx); {
		if idx[lo] < 0 {
			lo++
			continue
		}
		hi := lo
		for hi+1 < len(idx) && idx[hi+1] >= 0 && idx[hi+1] == idx[hi]+2 {
			hi++
		}
		if hi == lo {
			p = append(p, jump(jeqK, uint32(lo), 0, 1), stmt(retK, uint32(idx[lo])))
		} else {
			c := uint32(idx[lo] - 2*lo) // may wrap: A + c is taken mod 2^32
			body := []unix.SockFilter{stmt(lshK, 1)}
			if c != 0 {
				body = append(body, stmt(addK, c))
			}
			body = append(body, stmt(retA, 0))
			n := uint8(len(body))
			p = append(p, jump(jgtK, uint32(hi), n+1, 0), jump(jgeK, uint32(lo), 0, n))
			p = append(p, body...)
		}
		lo = hi + 1
	}
	return p
}

// sourceHash appends code that leaves in A the hash of the source
// address (IPv4 at network offset 12, IPv6 at 8, 16 bytes), as
// clientHash computes it; with port, the source port (at the transport
// header: IHL*4 bytes in for IPv4, 40 for IPv6) is folded in as one more
// word. It uses X and M[1].
func sourceHash(p []unix.SockFilter, port bool) []unix.SockFilter {
	v4 := append([]unix.SockFilter{stmt(ldW, off(skfNetOff+12))}, cfmix()...)
	v6 := append([]unix.SockFilter{stmt(ldW, off(skfNetOff+8))}, cfmix()...)
	for o := int32(12); o <= 20; o += 4 {
		v6 = append(v6, stmt(tax, 0), stmt(ldW, off(skfNetOff+o)), stmt(xorX, 0))
		v6 = append(v6, cfmix()...)
	}
	if port {
		v4 = append(v4, stmt(stMem, 1), stmt(ldxMsh, off(skfNetOff)))
		v6 = append(v6, stmt(stMem, 1), stmt(ldxImm, 40))
	}
	v4 = append(v4, stmt(ja, uint32(len(v6))))
	p = append(p,
		stmt(ldB, off(skfNetOff)), // version and IHL
		stmt(rshK, 4),
		jump(jeqK, 6, uint8(len(v4)), 0),
	)
	p = append(p, v4...)
	p = append(p, v6...)
	if port {
		p = append(p, stmt(ldHInd, off(skfNetOff)), stmt(tax, 0), stmt(ldMem, 1), stmt(xorX, 0))
		p = append(p, cfmix()...)
	}
	return p
}

// classic builds the classic BPF selector for the active sockets (sorted
// by slot, at least one). It returns an index into the group's socket
// array, in join order, which is index(target) because the group joins
// its sockets in that order and never closes one.
//
// steer mode: h = hash of source address and port (a flow hash of our
// own: skb->hash, SKF_AD_RXHASH, is 0 for datagrams from unconnected
// UDP sockets and on NICs that deliver no hash); return active[h % n].
//
// sticky: h = hash of the source address; s = h % slots; return the
// index of slot s's active socket, or, if it has none, active[h % n]
// (over the first n that fit in BPF_MAXINSNS, which all of them do
// unless the active set is fragmented into hundreds of runs).
//
// Every path ends in a return of an index that exists: the kernel
// treats an out-of-range index as no choice and hashes over the whole
// group, inactive sockets included.
//
// The program takes at most limit instructions (the rest of
// BPF_MAXINSNS is for a probe prefix).
func classic(mode Mode, slots int, active []Target, limit int) ([]unix.SockFilter, error) {
	if len(active) == 0 {
		return nil, fmt.Errorf("classic BPF: no active socket")
	}
	act := make([]int, len(active))
	for i, t := range active {
		act[i] = index(t)
	}
	if mode != ModeSticky {
		p := sourceHash(nil, true)
		p = append(p, stmt(modK, uint32(len(act))))
		p = table(p, act)
		p = append(p, stmt(retK, uint32(act[0])))
		if len(p) > limit {
			return nil, fmt.Errorf("classic BPF: %d instructions for %d active sockets exceed the limit of %d", len(p), len(act), limit)
		}
		return p, nil
	}
	p := sourceHash(nil, false)
	p = append(p, stmt(stMem, 0), stmt(modK, uint32(slots)))
	bySlot := make([]int, slots)
	for i := range bySlot {
		bySlot[i] = -1
	}
	for _, t := range active {
		bySlot[t.Slot] = index(t)
	}
	p = table(p, bySlot)
	head := len(p)
	// Fallback over the active sockets; shrink it until it fits.
	for n := len(act); n > 0; {
		q := append(p[:head:head], stmt(ldMem, 0), stmt(modK, uint32(n)))
		q = table(q, act[:n])
		q = append(q, stmt(retK, uint32(act[0])))
		if len(q) <= limit {
			return q, nil
		}
		n -= (len(q) - limit + 1) / 2
	}
	return nil, fmt.Errorf("classic BPF: the active set of %d sockets is too fragmented to fit %d instructions", len(act), limit)
}

// probeReserve is the room classic programs leave for a probe prefix:
// the longest, for maxProbes IPv6 probes, takes 12 + 2×maxProbes
// instructions (TestProbePrefixFits).
const probeReserve = 12 + 2*maxProbes

// probePrefix returns the instructions that go before a classic
// program while probes are in flight: a TCP SYN from addr (4 or 16
// bytes, as on the wire; every probe of a group has the same source) and
// a source port in probes returns that probe's socket index; anything
// else falls through to the program after the prefix. Nothing when no
// probe is in flight.
//
//	if (version == 4 or 6, as addr) && source address == addr {
//		port = source port (IPv4: after IHL*4 bytes; IPv6: after 40)
//		if (port == P1) return index1; ...
//	}
func probePrefix(addr []byte, probes map[uint16]int) []unix.SockFilter {
	if len(probes) == 0 {
		return nil
	}
	ports := make([]uint16, 0, len(probes))
	for port := range probes {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	// Each check jumps on a mismatch to the end of the prefix; the
	// offsets are filled in once its length is known.
	var p []unix.SockFilter
	var misses []int
	miss := func(k uint32) {
		misses = append(misses, len(p))
		p = append(p, jump(jeqK, k, 0, 0))
	}
	p = append(p, stmt(ldB, off(skfNetOff)), stmt(rshK, 4))
	if len(addr) == 4 {
		miss(4)
		p = append(p, stmt(ldW, off(skfNetOff+12)))
		miss(binary.BigEndian.Uint32(addr))
		p = append(p, stmt(ldxMsh, off(skfNetOff)), stmt(ldHInd, off(skfNetOff)))
	} else {
		miss(6)
		for i := range 4 {
			p = append(p, stmt(ldW, off(skfNetOff+8+4*int32(i))))
			miss(binary.BigEndian.Uint32(addr[4*i:]))
		}
		p = append(p, stmt(ldHAbs, off(skfNetOff+40)))
	}
	for _, port := range ports {
		p = append(p, jump(jeqK, uint32(port), 0, 1), stmt(retK, uint32(probes[port])))
	}
	for _, i := range misses {
		p[i].Jf = uint8(len(p) - i - 1) // at most 12 + 2×maxProbes < 256
	}
	return p
}

// attachClassic makes p the group's selector, replacing any program.
func attachClassic(fd int, p []unix.SockFilter) error {
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog); err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_REUSEPORT_CBPF: %w", err)
	}
	return nil
}
