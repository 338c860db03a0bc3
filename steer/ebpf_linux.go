//go:build linux

package steer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// layoutVersion numbers the eBPF program and map layout below. A master
// handed a group with another layout rebuilds program and maps. Every
// layout hands over program, socket array, configuration and counter
// map first, in that order (layout 1 had only those four); later
// layouts append: layout 2 added the probe map.
const layoutVersion = 2

// ebpfFds is the number of descriptors an eBPF selector of this layout
// hands over; ebpfFdsV1 those of layout 1.
const (
	ebpfFds   = 5
	ebpfFdsV1 = 4
)

// Selection modes stored in the configuration map.
const (
	confRoundRobin = 0
	confFlowHash   = 1
	confSticky     = 2
)

// Layout of the configuration value (native endian u32s):
//
//	0   n       number of active sockets (0: let the kernel pick)
//	4   mode    confRoundRobin, confFlowHash or confSticky
//	8   slots   modulus of sticky mode
//	16  active  [MaxSlots] socket-array keys of the active sockets
//	... slotkey [MaxSlots] socket-array key of each slot's active socket,
//	            or noKey
const (
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
// group and its four maps. Changing the choice is one update of the
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
}

func loadEBPF() (*ebpfSel, error) {
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
	e.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "handoff_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		Instructions: program(e.socks.FD(), e.conf.FD(), e.rr.FD(), e.probes.FD()),
		// Uses no GPL-only helper.
		License: "",
	})
	if err != nil {
		e.close()
		return nil, fmt.Errorf("load SK_REUSEPORT program: %w", err)
	}
	return e, nil
}

// adoptEBPF wraps descriptors handed over by another master whose
// selector has the given layout: program, socket array, configuration
// and counter map, then (layout 2 on) the probe map. It takes ownership
// of all of them (at least ebpfFdsV1). A selector of another layout is
// an error, but its socket array is kept, so that the caller can empty
// it (forget) before building a new one. On error the selector returned
// holds what could be opened, for forget and close.
func adoptEBPF(fds []int, layout int) (*ebpfSel, error) {
	e := &ebpfSel{}
	var errs []error
	if p, err := ebpf.NewProgramFromFD(fds[0]); err != nil {
		errs = append(errs, fmt.Errorf("program: %w", err))
	} else {
		e.prog = p
	}
	maps := []**ebpf.Map{&e.socks, &e.conf, &e.rr, &e.probes}
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
		return e, errors.Join(errs...)
	}
	if layout != layoutVersion {
		return e, fmt.Errorf("layout %d, this master has %d", layout, layoutVersion)
	}
	if e.prog.Type() != ebpf.SkReuseport ||
		e.socks.Type() != ebpf.ReusePortSockArray || e.socks.MaxEntries() != socketArraySize ||
		e.conf.Type() != ebpf.Hash || e.conf.ValueSize() != confSize ||
		e.rr.Type() != ebpf.Array || e.rr.ValueSize() != 8 ||
		e.probes == nil || e.probes.Type() != ebpf.Hash || e.probes.KeySize() != 2 || e.probes.ValueSize() != probeSize {
		return e, errors.New("program or maps have another layout")
	}
	return e, nil
}

func (e *ebpfSel) close() {
	if e == nil {
		return
	}
	if e.prog != nil {
		e.prog.Close()
	}
	for _, m := range []*ebpf.Map{e.socks, e.conf, e.rr, e.probes} {
		if m != nil {
			m.Close()
		}
	}
}

// fds returns the descriptors to hand over, in the order adoptEBPF takes.
func (e *ebpfSel) fds() []int {
	return []int{e.prog.FD(), e.socks.FD(), e.conf.FD(), e.rr.FD(), e.probes.FD()}
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

// set replaces the configuration. active are socket-array keys;
// slotKeys (sticky mode only) has one key or noKey per slot.
func (e *ebpfSel) set(mode uint32, active []uint32, slotKeys []uint32) error {
	v := make([]byte, confSize)
	ne := binary.NativeEndian
	ne.PutUint32(v[0:], uint32(len(active)))
	ne.PutUint32(v[4:], mode)
	ne.PutUint32(v[8:], uint32(len(slotKeys)))
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
//	case ROUND_ROBIN: h = fetch_add(rr[0], 1); break;   // then pick
//	case FLOW_HASH:   h = ctx->hash; break;             // then pick
//	case STICKY:
//		h = hash of the source address;
//		key = conf->slotkey[h % conf->slots];
//		if (key != none) goto select;
//	}
//	pick:   key = conf->active[h % conf->n];
//	select: bpf_sk_select_reuseport(ctx, socks, &key, 0);
//	return SK_PASS;
//
// Apart from a probe whose target cannot be selected (which must not
// reach another socket), it never returns SK_DROP (which refuses the
// connection): whatever goes wrong, SK_PASS without a selection lets the
// kernel hash over the group. During the listener lookup skb->data, from
// which bpf_skb_load_bytes counts, points at the TCP header (see
// TestKernelTCPHeaderAtData), so offset 0 is the source port.
func program(socks, conf, rr, probes int) asm.Instructions {
	var ipv6 [2]byte
	binary.BigEndian.PutUint16(ipv6[:], ethPIPv6)
	ethIPv6 := int32(binary.NativeEndian.Uint16(ipv6[:]))

	const (
		ctx   = asm.R6
		cfg   = asm.R7
		n     = asm.R8
		h     = asm.R9
		fp    = asm.RFP
		port  = -32 // 2 bytes: a TCP source port
		stack = -24 // 16 bytes: a source address
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
	loadAddr := func(off, size int32, fail string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, ctx),
			asm.Mov.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, stack),
			asm.Mov.Imm(asm.R4, size),
			asm.Mov.Imm(asm.R5, bpfHdrStartNet),
			asm.FnSkbLoadBytesRelative.Call(),
			asm.JNE.Imm(asm.R0, 0, fail),
		}
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
		asm.Ja.Label("pick"),

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
	return p
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
