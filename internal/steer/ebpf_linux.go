//go:build linux

package steer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// layoutVersion numbers the eBPF program and map layout below. A master
// handed a group with another layout rebuilds program and maps. Every
// layout hands over program, socket array, configuration and counter
// map first, in that order (layout 1 had only those four); later
// layouts append: layout 2 added the probe map, layout 3 the held,
// pending and conns maps (connections held per socket) and least-held
// selection. The tracepoint program that counts is not handed over: each
// master loads and attaches its own over the maps it was given.
const layoutVersion = 3

// ebpfFds is the number of descriptors an eBPF selector of this layout
// hands over; ebpfFdsV2 and ebpfFdsV1 those of layouts 2 and 1.
const (
	ebpfFds   = 8
	ebpfFdsV2 = 5
	ebpfFdsV1 = 4
)

// Selection modes stored in the configuration map.
const (
	confRoundRobin = 0
	confFlowHash   = 1
	confSticky     = 2
	// confLeastHeld is round robin among the active sockets holding
	// the fewest connections. The master sets it only while its tracer
	// counts: counts that nobody updates any more (a master whose
	// tracer failed to load took over) must not steer.
	confLeastHeld = 3
)

// Layout of the configuration value (native endian u32s):
//
//	0   n       number of active sockets (0: let the kernel pick)
//	4   mode    confRoundRobin, confLeastHeld, confFlowHash or confSticky
//	8   slots   modulus of sticky mode
//	12  counts  1 while the master's tracer counts held connections
//	            (not read by the program: tells a new master whether
//	            the held counts it adopts are current)
//	16  active  [MaxSlots] socket-array keys of the active sockets
//	... slotkey [MaxSlots] socket-array key of each slot's active socket,
//	            or noKey
const (
	confCounts  = 12
	confActive  = 16
	confSlotKey = confActive + 4*MaxSlots
	confSize    = confSlotKey + 4*MaxSlots
	noKey       = 0xffffffff
)

// Offsets in struct sk_reuseport_md (uapi linux/bpf.h).
const (
	mdEthProtocol = 20
	mdIPProtocol  = 24
	mdHash        = 32
)

// Layout of a probe map value (native endian u32s, then the address as
// on the wire):
//
//	0   key     socket-array key of the probe's target
//	4   alen    4 (IPv4) or 16 (IPv6): the family of the source
//	8   addr    the probe's source address, alen bytes, zero-padded
const (
	probeKey  = 0
	probeALen = 4
	probeAddr = 8
	probeSize = probeAddr + 16
)

const (
	skDrop          = 0 // SK_DROP
	skPass          = 1 // SK_PASS
	bpfHdrStartNet  = 1 // BPF_HDR_START_NET
	ethPIPv6        = 0x86dd
	socketArraySize = Banks * MaxSlots
)

// ebpfSel is the eBPF selector of one group: the program attached to the
// group and its maps, and the tracepoint program that counts the
// connections each socket holds. Changing the choice is one update of the
// configuration map (a hash map without preallocation, so an update
// replaces the value as a whole: the program sees the old or the new
// configuration, never a mix).
type ebpfSel struct {
	prog  *ebpf.Program
	socks *ebpf.Map // REUSEPORT_SOCKARRAY: index(target) → socket
	conf  *ebpf.Map // HASH, one entry: the configuration above
	rr    *ebpf.Map // ARRAY, one u64: the round-robin counter
	// HASH: TCP source port (2 bytes, network order) of a probe in
	// flight → its target and source address (probeSize bytes).
	probes *ebpf.Map
	// ARRAY, one value of socketArraySize u64s: the connections each
	// socket holds (see load_linux.go).
	held *ebpf.Map
	// LRU_HASH: tuple of a steered handshake → its socket's key.
	pending *ebpf.Map
	// HASH: tuple of a counted connection → its socket's key.
	conns *ebpf.Map

	tracer *tracer // nil: held connections are not counted
	noLoad error   // why tracer is nil
}

// loadEBPF loads a new selector for a group listening on port (host
// order; 0 for UDP: no tracer). A tracepoint program that cannot be loaded leaves held
// connections uncounted (noLoad says why), not the selector unusable.
func loadEBPF(port uint16) (*ebpfSel, error) {
	e := &ebpfSel{}
	var err error
	e.socks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_socks", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: socketArraySize,
	})
	if err != nil {
		return nil, fmt.Errorf("create socket array: %w", err)
	}
	e.conf, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_conf", Type: ebpf.Hash,
		KeySize: 4, ValueSize: confSize, MaxEntries: 1, Flags: unix.BPF_F_NO_PREALLOC,
	})
	if err != nil {
		e.close()
		return nil, fmt.Errorf("create configuration map: %w", err)
	}
	e.rr, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_rr", Type: ebpf.Array,
		KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		e.close()
		return nil, fmt.Errorf("create counter map: %w", err)
	}
	e.probes, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_probes", Type: ebpf.Hash,
		KeySize: 2, ValueSize: probeSize, MaxEntries: maxProbes,
	})
	if err != nil {
		e.close()
		return nil, fmt.Errorf("create probe map: %w", err)
	}
	if err := e.loadMaps(); err != nil {
		e.close()
		return nil, err
	}
	spec := func(scanning bool) *ebpf.ProgramSpec {
		name := progScan
		if !scanning {
			name = progNoScan
		}
		return &ebpf.ProgramSpec{
			Name:         name,
			Type:         ebpf.SkReuseport,
			AttachType:   ebpf.AttachSkReuseportSelect,
			Instructions: program(e.socks.FD(), e.conf.FD(), e.rr.FD(), e.probes.FD(), e.held.FD(), e.pending.FD(), scanning),
			// Uses no GPL-only helper.
			License: "",
		}
	}
	var scanErr error
	if !testNoBPFLoop {
		e.prog, scanErr = ebpf.NewProgram(spec(true))
	} else {
		scanErr = errors.New("bpf_loop disabled by a test")
	}
	if scanErr != nil {
		// Kernels before 5.17 have no bpf_loop: steer round robin,
		// still counting nothing.
		e.prog, err = ebpf.NewProgram(spec(false))
		if err != nil {
			e.close()
			return nil, fmt.Errorf("load SK_REUSEPORT program: %w", errors.Join(scanErr, err))
		}
		e.noLoad = fmt.Errorf("held connections not counted: the kernel cannot run the least-held scan (bpf_loop, Linux 5.17): %w", scanErr)
		return e, nil
	}
	e.startTracer(port)
	return e, nil
}

// Names of the selector program with and without the least-held scan:
// a master adopting one tells them apart by name.
const (
	progScan   = "handoff_steer"
	progNoScan = "handoff_steer_r"
)

// testNoBPFLoop makes loadEBPF build the selector without the least-held
// scan, as on a kernel without bpf_loop.
var testNoBPFLoop bool

// loadMaps creates the maps of layout 3 that count held connections.
func (e *ebpfSel) loadMaps() error {
	var err error
	e.held, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_held", Type: ebpf.Array,
		KeySize: 4, ValueSize: 8 * socketArraySize, MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("create held map: %w", err)
	}
	e.pending, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_pend", Type: ebpf.LRUHash,
		KeySize: tupleSize, ValueSize: 4, MaxEntries: pendingEntries,
	})
	if err != nil {
		return fmt.Errorf("create pending map: %w", err)
	}
	e.conns, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "handoff_conns", Type: ebpf.Hash,
		KeySize: tupleSize, ValueSize: 4, MaxEntries: connEntries, Flags: unix.BPF_F_NO_PREALLOC,
	})
	if err != nil {
		return fmt.Errorf("create connection map: %w", err)
	}
	return nil
}

// startTracer attaches a tracepoint program counting into the
// selector's maps; on failure it records why in noLoad.
func (e *ebpfSel) startTracer(port uint16) {
	if port == 0 {
		e.noLoad = errors.New("held connections not counted: not TCP")
		return
	}
	t, err := startTracer(port, e.held, e.pending, e.conns)
	if err != nil {
		e.noLoad = fmt.Errorf("held connections not counted: %w", err)
		return
	}
	e.tracer = t
}

// resetStaleCounts empties the held, pending and conns maps of an adopted
// selector whose previous master did not count (its configuration says
// so: its tracer had failed to load, or it steered UDP): closes it missed
// left counts that would never come down.
// Connections open now are then not counted; those made from now on
// are. Counts of a master that counted are kept.
func (e *ebpfSel) resetStaleCounts() error {
	v := make([]byte, confSize)
	if err := e.conf.Lookup(uint32(0), v); err == nil && binary.NativeEndian.Uint32(v[confCounts:]) == 1 {
		return nil
	}
	return e.resetCounts()
}

// resetCounts empties the held, pending and conns maps: every socket
// holds nothing, and connections open now are not counted (their closes
// find no entry, so no count goes below zero).
func (e *ebpfSel) resetCounts() error {
	var k [tupleSize]byte
	var val uint32
	for _, m := range []*ebpf.Map{e.conns, e.pending} {
		var keys [][tupleSize]byte
		it := m.Iterate()
		for it.Next(&k, &val) {
			keys = append(keys, k)
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("reset held counts: %w", err)
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("reset held counts: %w", err)
			}
		}
	}
	if err := e.held.Update(uint32(0), make([]byte, 8*socketArraySize), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset held counts: %w", err)
	}
	return nil
}

// heldCounts reads the connections held by every socket.
func (e *ebpfSel) heldCounts() ([]int64, error) {
	v := make([]byte, 8*socketArraySize)
	if err := e.held.Lookup(uint32(0), v); err != nil {
		return nil, fmt.Errorf("held map: %w", err)
	}
	out := make([]int64, socketArraySize)
	for i := range out {
		out[i] = int64(binary.NativeEndian.Uint64(v[8*i:]))
	}
	return out, nil
}

// adoptEBPF wraps descriptors handed over by another master whose
// selector has the given layout: program, socket array, configuration
// and counter map, then (layout 2 on) the probe map, then (layout 3 on)
// the held, pending and conns maps; with this layout it attaches a
// tracepoint program of its own (port, host order, is the group's) over
// the adopted maps. It takes ownership
// of all of them (at least ebpfFdsV1). A selector of another layout is
// an error, but its socket array is kept, so that the caller can empty
// it (forget) before building a new one. On error the selector returned
// holds what could be opened, for forget and close.
func adoptEBPF(fds []int, layout int, port uint16) (*ebpfSel, error) {
	e := &ebpfSel{}
	var errs []error
	if p, err := ebpf.NewProgramFromFD(fds[0]); err != nil {
		errs = append(errs, fmt.Errorf("program: %w", err))
	} else {
		e.prog = p
	}
	maps := []**ebpf.Map{&e.socks, &e.conf, &e.rr, &e.probes, &e.held, &e.pending, &e.conns}
	for i, fd := range fds[1:] {
		if i >= len(maps) {
			unix.Close(fd)
			continue
		}
		if mm, err := ebpf.NewMapFromFD(fd); err != nil {
			errs = append(errs, fmt.Errorf("map %d: %w", i, err))
		} else {
			*maps[i] = mm
		}
	}
	if len(errs) > 0 {
		// One line, for the log and the error a master prints.
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		return e, errors.New(strings.Join(msgs, "; "))
	}
	if layout != layoutVersion {
		return e, fmt.Errorf("layout %d, this master has %d", layout, layoutVersion)
	}
	if e.prog.Type() != ebpf.SkReuseport ||
		e.socks.Type() != ebpf.ReusePortSockArray || e.socks.MaxEntries() != socketArraySize ||
		e.conf.Type() != ebpf.Hash || e.conf.ValueSize() != confSize ||
		e.rr.Type() != ebpf.Array || e.rr.ValueSize() != 8 ||
		e.probes == nil || e.probes.Type() != ebpf.Hash || e.probes.KeySize() != 2 || e.probes.ValueSize() != probeSize ||
		e.held == nil || e.held.Type() != ebpf.Array || e.held.ValueSize() != 8*socketArraySize ||
		e.pending == nil || e.pending.Type() != ebpf.LRUHash || e.pending.KeySize() != tupleSize ||
		e.conns == nil || e.conns.Type() != ebpf.Hash || e.conns.KeySize() != tupleSize {
		return e, errors.New("program or maps have another layout")
	}
	if info, err := e.prog.Info(); err == nil && info.Name == progNoScan {
		// Built where bpf_loop is missing: this kernel has none either.
		e.noLoad = errors.New("held connections not counted: the handed-over selector has no least-held scan (bpf_loop, Linux 5.17)")
		return e, nil
	}
	if err := e.resetStaleCounts(); err != nil {
		return e, err
	}
	e.startTracer(port)
	return e, nil
}

func (e *ebpfSel) close() {
	if e == nil {
		return
	}
	e.tracer.close()
	e.tracer = nil
	if e.prog != nil {
		e.prog.Close()
	}
	for _, m := range []*ebpf.Map{e.socks, e.conf, e.rr, e.probes, e.held, e.pending, e.conns} {
		if m != nil {
			m.Close()
		}
	}
}

// fds returns the descriptors to hand over, in the order adoptEBPF takes.
func (e *ebpfSel) fds() []int {
	return []int{e.prog.FD(), e.socks.FD(), e.conf.FD(), e.rr.FD(), e.probes.FD(), e.held.FD(), e.pending.FD(), e.conns.FD()}
}

// setProbe makes the program send a TCP SYN from addr (4 or 16 bytes,
// as on the wire) and source port to the socket at key.
func (e *ebpfSel) setProbe(port uint16, key int, addr []byte) error {
	v := make([]byte, probeSize)
	ne := binary.NativeEndian
	ne.PutUint32(v[probeKey:], uint32(key))
	ne.PutUint32(v[probeALen:], uint32(len(addr)))
	copy(v[probeAddr:], addr)
	if err := e.probes.Update(probePortKey(port), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("probe map: add source port %d: %w", port, err)
	}
	return nil
}

// deleteProbe removes a probe entry; one that is not there is no error.
func (e *ebpfSel) deleteProbe(port uint16) error {
	err := e.probes.Delete(probePortKey(port))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("probe map: remove source port %d: %w", port, err)
	}
	return nil
}

// probePorts lists the source ports in the probe map.
func (e *ebpfSel) probePorts() ([]uint16, error) {
	var ports []uint16
	var k [2]byte
	var v []byte
	it := e.probes.Iterate()
	for it.Next(&k, &v) {
		ports = append(ports, binary.BigEndian.Uint16(k[:]))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("probe map: %w", err)
	}
	return ports, nil
}

// clearProbes empties the probe map: entries left by a previous master
// that stopped in the middle of a probe.
func (e *ebpfSel) clearProbes() error {
	ports, err := e.probePorts()
	for _, p := range ports {
		if derr := e.deleteProbe(p); derr != nil && err == nil {
			err = derr
		}
	}
	return err
}

// probePortKey is a port as the program reads it from the TCP header.
func probePortKey(port uint16) [2]byte {
	var k [2]byte
	binary.BigEndian.PutUint16(k[:], port)
	return k
}

// attach makes the program the group's selector (replacing any other).
func (e *ebpfSel) attach(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, e.prog.FD()); err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_REUSEPORT_EBPF: %w", err)
	}
	return nil
}

// add puts socket fd into the socket array at key. The socket must be in
// the group already (listening, or bound for UDP).
func (e *ebpfSel) add(key, fd int) error {
	if err := e.socks.Update(uint32(key), uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("socket array: add socket %d: %w", key, err)
	}
	return nil
}

// forget empties the socket array, so that its sockets may join another
// array (a socket is in at most one).
func (e *ebpfSel) forget() {
	if e == nil || e.socks == nil || e.socks.Type() != ebpf.ReusePortSockArray {
		return
	}
	for k := uint32(0); k < e.socks.MaxEntries(); k++ {
		_ = e.socks.Delete(k)
	}
}

// choice reads the active socket-array keys from the configuration map.
func (e *ebpfSel) choice() ([]uint32, error) {
	v := make([]byte, confSize)
	if err := e.conf.Lookup(uint32(0), v); err != nil {
		return nil, fmt.Errorf("steering map: %w", err)
	}
	ne := binary.NativeEndian
	n := ne.Uint32(v[0:])
	if n > MaxSlots {
		return nil, fmt.Errorf("steering map: %d active sockets", n)
	}
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = ne.Uint32(v[confActive+4*i:])
	}
	return keys, nil
}

// set replaces the configuration. active are socket-array keys;
// slotKeys (sticky mode only) has one key or noKey per slot.
func (e *ebpfSel) set(mode uint32, active []uint32, slotKeys []uint32) error {
	v := make([]byte, confSize)
	ne := binary.NativeEndian
	ne.PutUint32(v[0:], uint32(len(active)))
	ne.PutUint32(v[4:], mode)
	ne.PutUint32(v[8:], uint32(len(slotKeys)))
	if e.tracer != nil {
		ne.PutUint32(v[confCounts:], 1)
	}
	for i, k := range active {
		ne.PutUint32(v[confActive+4*i:], k)
	}
	for i := range MaxSlots {
		k := uint32(noKey)
		if i < len(slotKeys) {
			k = slotKeys[i]
		}
		ne.PutUint32(v[confSlotKey+4*i:], k)
	}
	if err := e.conf.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("update steering map: %w", err)
	}
	return nil
}

// program returns the SK_REUSEPORT selector. In C it would read:
//
//	if (ctx->ip_protocol == TCP && !load_bytes(ctx, 0, &port, 2) &&
//	    (p = lookup(probes, &port)) && p->alen == source address length &&
//	    source address == p->addr) {          // a probe: its target only
//		key = p->key;
//		return bpf_sk_select_reuseport(ctx, socks, &key, 0) ? SK_DROP : SK_PASS;
//	}
//	conf = lookup(conf_map, 0); if (!conf || !conf->n) return SK_PASS;
//	switch (conf->mode) {
//	case ROUND_ROBIN: case LEAST_HELD:
//		h = fetch_add(rr[0], 1);
//		if (conf->mode != LEAST_HELD || !(s.held = lookup(held, 0))) goto pick;
//		s = { conf, start: h, n: conf->n, best: ~0, best_held: ~0 };
//		bpf_loop(conf->n, scan, &s, 0);   // least held from h % n on
//		if (s.best >= socketArraySize) goto pick;
//		key = s.best; goto select;
//	case FLOW_HASH:   h = ctx->hash; break;             // then pick
//	case STICKY:
//		h = hash of the source address;
//		key = conf->slotkey[h % conf->slots];
//		if (key != none) goto select;
//	}
//	pick:   key = conf->active[h % conf->n];
//	select: if (bpf_sk_select_reuseport(ctx, socks, &key, 0)) return SK_PASS;
//	if (ctx->ip_protocol == TCP) {   // for the tracer (load_linux.go)
//		t = { source address, destination address, source port };
//		update(pending, &t, &key, BPF_ANY);
//	}
//	return SK_PASS;
//
// Apart from a probe whose target cannot be selected (which must not
// reach another socket), it never returns SK_DROP (which refuses the
// connection): whatever goes wrong, SK_PASS without a selection lets the
// kernel hash over the group. During the listener lookup skb->data, from
// which bpf_skb_load_bytes counts, points at the TCP header (see
// TestKernelTCPHeaderAtData), so offset 0 is the source port.
func program(socks, conf, rr, probes, held, pending int, scanning bool) asm.Instructions {
	var ipv6 [2]byte
	binary.BigEndian.PutUint16(ipv6[:], ethPIPv6)
	ethIPv6 := int32(binary.NativeEndian.Uint16(ipv6[:]))
	// The third word of a v4-mapped address, as it lies in memory.
	v4mapped := int64(imm32(binary.NativeEndian.Uint32([]byte{0, 0, 0xff, 0xff})))

	const (
		ctx   = asm.R6
		cfg   = asm.R7
		n     = asm.R8
		h     = asm.R9
		fp    = asm.RFP
		scan  = -128 // scanSize bytes: the state of scanProgram
		tuple = -88  // tupleSize bytes: the connection (load_linux.go)
		port  = -32  // 2 bytes: a TCP source port
		stack = -24  // 16 bytes: a source address
		key   = -8
		zero  = -4
	)
	fmix := func(r asm.Register) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg32(asm.R1, r), asm.RSh.Imm32(asm.R1, 16), asm.Xor.Reg32(r, asm.R1),
			asm.Mul.Imm32(r, imm32(0x85ebca6b)),
			asm.Mov.Reg32(asm.R1, r), asm.RSh.Imm32(asm.R1, 13), asm.Xor.Reg32(r, asm.R1),
			asm.Mul.Imm32(r, imm32(0xc2b2ae35)),
			asm.Mov.Reg32(asm.R1, r), asm.RSh.Imm32(asm.R1, 16), asm.Xor.Reg32(r, asm.R1),
		}
	}
	loadTo := func(off, dst, size int32, fail string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, ctx),
			asm.Mov.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, dst),
			asm.Mov.Imm(asm.R4, size),
			asm.Mov.Imm(asm.R5, bpfHdrStartNet),
			asm.FnSkbLoadBytesRelative.Call(),
			asm.JNE.Imm(asm.R0, 0, fail),
		}
	}
	loadAddr := func(off, size int32, fail string) asm.Instructions {
		return loadTo(off, stack, size, fail)
	}
	word := func(i int16) asm.Instructions { // r2 = big-endian word i of the address
		return asm.Instructions{
			asm.LoadMem(asm.R2, fp, stack+4*i, asm.Word),
			asm.HostTo(asm.BE, asm.R2, asm.Word),
		}
	}

	var p asm.Instructions
	add := func(is ...asm.Instruction) { p = append(p, is...) }
	addAll := func(iss ...asm.Instructions) {
		for _, is := range iss {
			p = append(p, is...)
		}
	}
	// A probe? Checked first: its SYN goes to its target and nowhere
	// else, and takes no turn of the round robin.
	add(
		asm.Mov.Reg(ctx, asm.R1),
		asm.LoadMem(asm.R1, ctx, mdIPProtocol, asm.Word),
		asm.JNE.Imm(asm.R1, unix.IPPROTO_TCP, "steer"),
		asm.Mov.Reg(asm.R1, ctx),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, port),
		asm.Mov.Imm(asm.R4, 2),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "steer"),
		asm.LoadMapPtr(asm.R1, probes),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, port),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "steer"),
		asm.Mov.Reg(cfg, asm.R0), // the probe entry, here
		asm.LoadMem(asm.R1, ctx, mdEthProtocol, asm.Word),
		asm.JEq.Imm(asm.R1, ethIPv6, "probe6"),
		asm.LoadMem(asm.R1, cfg, probeALen, asm.Word),
		asm.JNE.Imm(asm.R1, 4, "steer"),
	)
	addAll(loadAddr(12, 4, "steer"))
	add(
		asm.LoadMem(asm.R1, fp, stack, asm.Word),
		asm.LoadMem(asm.R2, cfg, probeAddr, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "steer"),
		asm.Ja.Label("probesel"),
		asm.LoadMem(asm.R1, cfg, probeALen, asm.Word).WithSymbol("probe6"),
		asm.JNE.Imm(asm.R1, 16, "steer"),
	)
	addAll(loadAddr(8, 16, "steer"))
	for i := int16(0); i < 4; i++ {
		add(
			asm.LoadMem(asm.R1, fp, stack+4*i, asm.Word),
			asm.LoadMem(asm.R2, cfg, probeAddr+4*i, asm.Word),
			asm.JNE.Reg(asm.R1, asm.R2, "steer"),
		)
	}
	add(
		asm.LoadMem(asm.R2, cfg, probeKey, asm.Word).WithSymbol("probesel"),
		asm.StoreMem(fp, key, asm.R2, asm.Word),
		asm.Mov.Reg(asm.R1, ctx),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, key),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R0, skPass),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skDrop).WithSymbol("drop"),
		asm.Return(),
	)

	add(
		asm.StoreImm(fp, zero, 0, asm.Word).WithSymbol("steer"),
		asm.LoadMapPtr(asm.R1, conf),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, zero),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(cfg, asm.R0),
		asm.LoadMem(n, cfg, 0, asm.Word),
		asm.JEq.Imm(n, 0, "pass"),
		asm.LoadMem(asm.R1, cfg, 4, asm.Word),
		asm.JEq.Imm(asm.R1, confSticky, "sticky"),
		asm.JEq.Imm(asm.R1, confFlowHash, "flowhash"),

		// Round robin: h = rr[0]++, atomically across CPUs.
		asm.StoreImm(fp, zero, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, rr),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, zero),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "flowhash"),
		asm.Mov.Imm(h, 1),
		fetchAdd(asm.R0, h),
	)
	if scanning {
		add(
			asm.LoadMem(asm.R1, cfg, 4, asm.Word),
			asm.JNE.Imm(asm.R1, confLeastHeld, "pick"),

			// Least held, ties round robin: scan the active sockets from
			// h % n on, keep the first with the fewest held connections,
			// stop at one holding none. (h is the counter's old value.)
			asm.StoreImm(fp, zero, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, held),
			asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, zero),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "pick"),
			asm.StoreMem(fp, scan+scanHeld, asm.R0, asm.DWord),
			asm.StoreMem(fp, scan+scanConf, cfg, asm.DWord),
			asm.StoreMem(fp, scan+scanStart, h, asm.Word),
			asm.StoreMem(fp, scan+scanN, n, asm.Word),
			asm.Mov.Imm(asm.R1, -1),
			asm.StoreMem(fp, scan+scanBest, asm.R1, asm.DWord),
			asm.StoreMem(fp, scan+scanBestHeld, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, n),
			asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("scan"),
			asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, scan),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnLoop.Call(),
			asm.LoadMem(asm.R2, fp, scan+scanBest, asm.DWord),
			asm.JGE.Imm(asm.R2, socketArraySize, "pick"),
			asm.Ja.Label("select"),
		)
	} else {
		add(asm.Ja.Label("pick"))
	}
	add(
		asm.LoadMem(h, ctx, mdHash, asm.Word).WithSymbol("flowhash"),

		// pick: key = conf->active[h % n]
		asm.Mod.Reg32(h, n).WithSymbol("pick"),
		asm.JGE.Imm(h, MaxSlots, "pass"),
		asm.LSh.Imm(h, 2),
		asm.Mov.Reg(asm.R1, cfg),
		asm.Add.Reg(asm.R1, h),
		asm.LoadMem(asm.R2, asm.R1, confActive, asm.Word),

		// select: bpf_sk_select_reuseport(ctx, socks, &key, 0)
		asm.StoreMem(fp, key, asm.R2, asm.Word).WithSymbol("select"),
		asm.Mov.Reg(asm.R1, ctx),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, key),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),

		// A TCP connection: remember tuple → key for the tracer.
		asm.LoadMem(asm.R1, ctx, mdIPProtocol, asm.Word),
		asm.JNE.Imm(asm.R1, unix.IPPROTO_TCP, "pass"),
		asm.StoreImm(fp, tuple+tuplePort, 0, asm.Word),
		asm.Mov.Reg(asm.R1, ctx),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, tuple+tuplePort),
		asm.Mov.Imm(asm.R4, 2),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, fp, tuple+tuplePort, asm.Half),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.StoreMem(fp, tuple+tuplePort, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, ctx, mdEthProtocol, asm.Word),
		asm.JEq.Imm(asm.R1, ethIPv6, "tuple6"),
		// IPv4: both addresses as ::ffff:a.b.c.d.
		asm.StoreImm(fp, tuple+tupleRemote, 0, asm.Word),
		asm.StoreImm(fp, tuple+tupleRemote+4, 0, asm.Word),
		asm.StoreImm(fp, tuple+tupleRemote+8, v4mapped, asm.Word),
		asm.StoreImm(fp, tuple+tupleLocal, 0, asm.Word),
		asm.StoreImm(fp, tuple+tupleLocal+4, 0, asm.Word),
		asm.StoreImm(fp, tuple+tupleLocal+8, v4mapped, asm.Word),
	)
	addAll(
		loadTo(12, tuple+tupleRemote+12, 4, "pass"),
		loadTo(16, tuple+tupleLocal+12, 4, "pass"),
	)
	add(asm.Ja.Label("record"))
	v6t := loadTo(8, tuple+tupleRemote, 16, "pass")
	v6t[0] = v6t[0].WithSymbol("tuple6")
	addAll(v6t, loadTo(24, tuple+tupleLocal, 16, "pass"))
	add(
		asm.LoadMapPtr(asm.R1, pending).WithSymbol("record"),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, tuple),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, key),
		asm.Mov.Imm(asm.R4, unix.BPF_ANY),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)

	// Sticky: h = hash of the source address, as clientHash computes it.
	sticky := asm.Instructions{
		asm.LoadMem(asm.R1, ctx, mdEthProtocol, asm.Word),
	}
	sticky[0] = sticky[0].WithSymbol("sticky")
	p = append(p, sticky...)
	add(asm.JEq.Imm(asm.R1, ethIPv6, "ipv6"))
	addAll(loadAddr(12, 4, "flowhash"), word(0))
	add(asm.Mov.Reg(h, asm.R2))
	addAll(fmix(h))
	add(asm.Ja.Label("slot"))
	v6 := loadAddr(8, 16, "flowhash")
	v6[0] = v6[0].WithSymbol("ipv6")
	addAll(v6, word(0))
	add(asm.Mov.Reg(h, asm.R2))
	addAll(fmix(h))
	for i := int16(1); i < 4; i++ {
		addAll(word(i))
		add(asm.Xor.Reg32(h, asm.R2))
		addAll(fmix(h))
	}
	// slot: key = conf->slotkey[h % slots]; none → pick over the active.
	add(
		asm.LoadMem(asm.R1, cfg, 8, asm.Word).WithSymbol("slot"),
		asm.JEq.Imm(asm.R1, 0, "pick"),
		asm.Mov.Reg32(asm.R2, h),
		asm.Mod.Reg32(asm.R2, asm.R1),
		asm.JGE.Imm(asm.R2, MaxSlots, "pick"),
		asm.LSh.Imm(asm.R2, 2),
		asm.Mov.Reg(asm.R3, cfg),
		asm.Add.Reg(asm.R3, asm.R2),
		asm.LoadMem(asm.R2, asm.R3, confSlotKey, asm.Word),
		asm.JGE.Imm(asm.R2, socketArraySize, "pick"),
		asm.Ja.Label("select"),
	)
	if !scanning {
		return p
	}
	// bpf_loop's callback must be described in BTF (func_info), and
	// then so must every function of the program.
	p[0] = btf.WithFuncMetadata(p[0], &btf.Func{
		Name: "handoff_steer", Linkage: btf.GlobalFunc,
		Type: &btf.FuncProto{
			Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
			Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
		},
	})
	sc := scanProgram()
	sc[0] = btf.WithFuncMetadata(sc[0], &btf.Func{
		Name: "scan", Linkage: btf.StaticFunc,
		Type: &btf.FuncProto{
			Return: &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed},
			Params: []btf.FuncParam{
				{Name: "i", Type: &btf.Int{Name: "unsigned int", Size: 4}},
				{Name: "s", Type: &btf.Pointer{Target: &btf.Void{}}},
			},
		},
	})
	return append(p, sc...)
}

// The state of the least-held scan, on the stack of the selector: a
// pointer to held[0], one to the configuration, the index the scan
// starts at (the round-robin counter) and the number of active sockets
// (u32s), the best key so far and its held count (u64s, all ones for
// none).
const (
	scanHeld     = 0
	scanConf     = 8
	scanStart    = 16
	scanN        = 20
	scanBest     = 24
	scanBestHeld = 32
	scanSize     = 40
)

// scanProgram is the bpf_loop callback of the least-held scan, called
// with i = 0..n-1:
//
//	static long scan(u32 i, struct scan *s) {
//		j = (s->start + i) % s->n;
//		key = s->conf->active[j];
//		if (key >= socketArraySize) return 0;
//		h = s->held[key];
//		if (h >= s->best_held) return 0;  // ties: the first seen wins
//		s->best = key; s->best_held = h;
//		return h == 0;                    // none fewer than 0: stop
//	}
//
// A loop in the selector itself would cost the verifier one pass per
// possible iteration (MaxSlots); bpf_loop's callback is verified once.
func scanProgram() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R3, asm.R2, scanStart, asm.Word).WithSymbol("scan"),
		asm.LoadMem(asm.R4, asm.R2, scanN, asm.Word),
		asm.JEq.Imm(asm.R4, 0, "scan_stop"),
		asm.Add.Reg32(asm.R3, asm.R1),
		asm.Mod.Reg32(asm.R3, asm.R4),
		asm.JGE.Imm(asm.R3, MaxSlots, "scan_stop"),
		asm.LSh.Imm(asm.R3, 2),
		asm.LoadMem(asm.R5, asm.R2, scanConf, asm.DWord),
		asm.Add.Reg(asm.R5, asm.R3),
		asm.LoadMem(asm.R5, asm.R5, confActive, asm.Word),
		asm.JGE.Imm(asm.R5, socketArraySize, "scan_next"),
		asm.Mov.Reg(asm.R3, asm.R5),
		asm.LSh.Imm(asm.R3, 3),
		asm.LoadMem(asm.R0, asm.R2, scanHeld, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R3),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.LoadMem(asm.R3, asm.R2, scanBestHeld, asm.DWord),
		asm.JGE.Reg(asm.R0, asm.R3, "scan_next"),
		asm.StoreMem(asm.R2, scanBest, asm.R5, asm.DWord),
		asm.StoreMem(asm.R2, scanBestHeld, asm.R0, asm.DWord),
		asm.JEq.Imm(asm.R0, 0, "scan_stop"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("scan_next"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("scan_stop"),
		asm.Return(),
	}
}

// fetchAdd is "src = atomic_fetch_add((u64 *)dst, src)". cilium/ebpf
// v0.22.0 marshals atomic instructions with the immediate taken from
// Instruction.Constant before it fills that in from the opcode, so
// asm.FetchAdd.Mem alone loses BPF_FETCH and becomes a plain atomic add
// (src keeps its value). Setting Constant to the same bits works with
// that version and with a corrected one; TestRoundRobin would catch a
// lost fetch (every connection would go to one socket).
func fetchAdd(dst, src asm.Register) asm.Instruction {
	ins := asm.FetchAdd.Mem(dst, src, asm.DWord, 0)
	ins.Constant = int64(asm.FetchAdd >> 8)
	return ins
}

// imm32 reinterprets a 32-bit constant as the signed immediate field.
func imm32(v uint32) int32 { return int32(v) }
