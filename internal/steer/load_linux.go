//go:build linux

package steer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Connections held per socket (see "Load" in doc.go).
//
// The selector records, for every TCP connection it steers, the
// connection's tuple → socket-array key in the pending map (LRU). A
// tracepoint program on sock:inet_sock_set_state moves the entry to the
// conns map when the connection becomes ESTABLISHED (SYN_RECV →
// ESTABLISHED: the child socket is in the chosen listener's accept
// queue) and adds one to held[key]; when the server's side closes
// (ESTABLISHED → FIN_WAIT1, CLOSE_WAIT → LAST_ACK) or the connection is
// reset (→ CLOSE) it deletes the entry and subtracts one. A client that
// closes first (ESTABLISHED → CLOSE_WAIT) leaves the connection held:
// the worker still has it, in its queue or in hand, until it closes it. Whoever deletes an entry owns its count, so two tracers
// attached to the same maps (an old and a new master during a hand-over)
// never count a connection twice, and a count never goes below zero.

// Layout of a tuple key (36 bytes), the same in both programs: the
// remote and the local address as IPv6 (an IPv4 address v4-mapped,
// ::ffff:a.b.c.d, as the tracepoint reports an IPv4 socket's), the
// remote port in host order, two bytes of zero.
const (
	tupleRemote = 0
	tupleLocal  = 16
	tuplePort   = 32
	tupleSize   = 36
)

const (
	// pendingEntries bounds the handshakes in flight the selector
	// remembers. Entries of handshakes that never complete (a SYN
	// flood, a client gone mid-handshake) carry no count: the LRU
	// evicts them. A handshake whose entry was evicted before it
	// completed is not counted at all (neither up nor down).
	pendingEntries = 16384
	// connEntries bounds the connections counted at once; past it, new
	// connections are not counted (the insertion fails, nothing is
	// added, nothing will be subtracted).
	connEntries = 65536
)

// TCP states (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpCloseWait   = 8
)

// tracepointFields are the fields of sock:inet_sock_set_state the
// tracer reads, with the size each must have.
var tracepointFields = map[string]int{
	"oldstate": 4, "newstate": 4, "sport": 2, "dport": 2, "protocol": 2,
	"saddr_v6": 16, "daddr_v6": 16,
}

// tracepoint is what the tracer needs to know of sock:inet_sock_set_state
// on this kernel: its perf event id and the offsets of its fields.
type tracepoint struct {
	id  uint64
	off map[string]int16
}

// findTracepoint reads the id and format of sock:inet_sock_set_state
// from tracefs: where it is mounted (/sys/kernel/tracing, or under
// debugfs), else from a tracefs mounted for the moment in a mount
// namespace of a thread of its own, which nothing else sees and which
// goes away with that thread (needs CAP_SYS_ADMIN).
func findTracepoint() (*tracepoint, error) {
	tpCache.Lock()
	defer tpCache.Unlock()
	if tpCache.tp != nil {
		return tpCache.tp, nil
	}
	tp, err := lookupTracepoint()
	if err == nil {
		tpCache.tp = tp
	}
	return tp, err
}

// tpCache keeps what findTracepoint found: the id and format of a
// tracepoint do not change while the kernel runs. A failure is not kept
// (tracefs may be mounted later).
var tpCache struct {
	sync.Mutex
	tp *tracepoint
}

func lookupTracepoint() (*tracepoint, error) {
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if tp, err := readTracepoint(dir); err == nil {
			return tp, nil
		}
	}
	type result struct {
		tp  *tracepoint
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, with its mount namespace, ends
		// with this goroutine.
		runtime.LockOSThread()
		tp, err := privateTracefs()
		ch <- result{tp, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("tracefs is not mounted, and mounting it privately failed: %w", r.err)
	}
	return r.tp, nil
}

func privateTracefs() (*tracepoint, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return nil, fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	dir, err := os.MkdirTemp("", "handoff-tracefs")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	if err := unix.Mount("tracefs", dir, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount tracefs: %w", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	return readTracepoint(dir)
}

func readTracepoint(dir string) (*tracepoint, error) {
	ev := filepath.Join(dir, "events", "sock", "inet_sock_set_state")
	b, err := os.ReadFile(filepath.Join(ev, "id"))
	if err != nil {
		return nil, err
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("tracepoint id %q: %w", b, err)
	}
	format, err := os.ReadFile(filepath.Join(ev, "format"))
	if err != nil {
		return nil, err
	}
	off, err := parseFormat(format)
	if err != nil {
		return nil, err
	}
	return &tracepoint{id: id, off: off}, nil
}

// parseFormat reads the offsets of the fields the tracer uses from a
// tracepoint format file, e.g.
//
//	field:__u16 sport;	offset:24;	size:2;	signed:0;
//
// and checks their sizes and alignment (the program loads them whole).
func parseFormat(format []byte) (map[string]int16, error) {
	off := map[string]int16{}
	sc := bufio.NewScanner(bytes.NewReader(format))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "field:") {
			continue
		}
		var decl string
		o, size := -1, -1
		for _, part := range strings.Split(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
			if !ok {
				continue
			}
			switch k {
			case "field":
				decl = v
			case "offset":
				o, _ = strconv.Atoi(v)
			case "size":
				size, _ = strconv.Atoi(v)
			}
		}
		name := decl[strings.LastIndexAny(decl, " *")+1:]
		if i := strings.IndexByte(name, '['); i >= 0 {
			name = name[:i]
		}
		want, ok := tracepointFields[name]
		if !ok {
			continue
		}
		align := min(want, 4)
		if size != want || o < 0 || o > 1024 || o%align != 0 {
			return nil, fmt.Errorf("tracepoint field %s: offset %d size %d (want size %d, aligned)", name, o, size, want)
		}
		off[name] = int16(o)
	}
	for name := range tracepointFields {
		if _, ok := off[name]; !ok {
			return nil, fmt.Errorf("tracepoint format has no field %s", name)
		}
	}
	return off, nil
}

// tracer is the tracepoint program of one group, attached.
type tracer struct {
	prog *ebpf.Program
	link link.Link
}

// startTracer loads the tracepoint program that counts the connections
// of the group listening on port (host order) in held, and attaches it.
func startTracer(port uint16, held, pending, conns *ebpf.Map) (*tracer, error) {
	tp, err := findTracepoint()
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "handoff_held",
		Type:         ebpf.TracePoint,
		Instructions: tracerProgram(tp.off, port, held.FD(), pending.FD(), conns.FD()),
		// Uses no GPL-only helper: reads only its context.
		License: "",
	})
	if err != nil {
		return nil, fmt.Errorf("load tracepoint program: %w", err)
	}
	attr := unix.PerfEventAttr{
		Type:        unix.PERF_TYPE_TRACEPOINT,
		Config:      tp.id,
		Sample_type: unix.PERF_SAMPLE_RAW,
		Sample:      1,
		Wakeup:      1,
	}
	attr.Size = uint32(binary.Size(attr))
	// One event suffices: a program attached to a tracepoint runs on
	// every CPU.
	pfd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("perf_event_open sock:inet_sock_set_state: %w", err)
	}
	// The link holds the perf event; our descriptor is not needed.
	defer unix.Close(pfd)
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: pfd, Program: prog, Attach: ebpf.AttachPerfEvent})
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("attach to sock:inet_sock_set_state: %w", err)
	}
	return &tracer{prog: prog, link: l}, nil
}

func (t *tracer) close() {
	if t == nil {
		return
	}
	t.link.Close()
	t.prog.Close()
}

// tracerProgram returns the tracepoint program. In C:
//
//	if (ctx->protocol != IPPROTO_TCP || ctx->sport != port) return 0;
//	if (ctx->oldstate == TCP_CLOSE_WAIT) release = 1;  // the worker closed, or reset
//	else if (ctx->oldstate == TCP_ESTABLISHED) {
//		if (ctx->newstate == TCP_CLOSE_WAIT) return 0;  // only the client closed
//		release = 1;                                    // FIN_WAIT1, CLOSE
//	} else if (ctx->oldstate == TCP_SYN_RECV && ctx->newstate == TCP_ESTABLISHED) release = 0;
//	else return 0;
//	t = { ctx->daddr_v6, ctx->saddr_v6, ctx->dport };
//	if (!release) {
//		if (!(k = lookup(pending, &t))) return 0;
//		key = *k; delete(pending, &t);
//		if (update(conns, &t, &key, BPF_NOEXIST)) return 0;
//		atomic_add(&held[0][key], 1);
//	} else {
//		if (!(k = lookup(conns, &t))) return 0;
//		key = *k;
//		if (delete(conns, &t)) return 0;   // someone else counted it down
//		atomic_add(&held[0][key], -1);
//	}
func tracerProgram(off map[string]int16, port uint16, held, pending, conns int) asm.Instructions {
	const (
		ctx     = asm.R6
		release = asm.R7
		fp      = asm.RFP
		tuple   = -48 // tupleSize bytes
		key     = -8
		zero    = -4
	)
	p := asm.Instructions{
		asm.Mov.Reg(ctx, asm.R1),
		asm.LoadMem(asm.R2, ctx, off["protocol"], asm.Half),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_TCP, "out"),
		asm.LoadMem(asm.R2, ctx, off["sport"], asm.Half),
		asm.JNE.Imm(asm.R2, int32(port), "out"),
		asm.LoadMem(asm.R2, ctx, off["oldstate"], asm.Word),
		asm.LoadMem(asm.R3, ctx, off["newstate"], asm.Word),
		asm.Mov.Imm(release, 1),
		asm.JEq.Imm32(asm.R2, tcpCloseWait, "tuple"),
		asm.JNE.Imm32(asm.R2, tcpEstablished, "synrecv"),
		asm.JEq.Imm32(asm.R3, tcpCloseWait, "out"),
		asm.Ja.Label("tuple"),
		asm.JNE.Imm32(asm.R2, tcpSynRecv, "out").WithSymbol("synrecv"),
		asm.JNE.Imm32(asm.R3, tcpEstablished, "out"),
		asm.Mov.Imm(release, 0),
	}
	// The tuple: remote address (daddr_v6), local address (saddr_v6),
	// remote port (dport, host order), two bytes of zero.
	p = append(p, asm.StoreImm(fp, tuple+32, 0, asm.Word).WithSymbol("tuple"))
	for i := int16(0); i < 4; i++ {
		p = append(p,
			asm.LoadMem(asm.R2, ctx, off["daddr_v6"]+4*i, asm.Word),
			asm.StoreMem(fp, tuple+tupleRemote+4*i, asm.R2, asm.Word),
			asm.LoadMem(asm.R2, ctx, off["saddr_v6"]+4*i, asm.Word),
			asm.StoreMem(fp, tuple+tupleLocal+4*i, asm.R2, asm.Word),
		)
	}
	lookup := func(m int, miss string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, tuple),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, miss),
			asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
			asm.StoreMem(fp, key, asm.R2, asm.Word),
		}
	}
	del := func(m int) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, tuple),
			asm.FnMapDeleteElem.Call(),
		}
	}
	p = append(p,
		asm.LoadMem(asm.R2, ctx, off["dport"], asm.Half),
		asm.StoreMem(fp, tuple+tuplePort, asm.R2, asm.Half),
		asm.JNE.Imm(release, 0, "release"),
	)
	// Established: count it on the socket its SYN was steered to.
	p = append(p, lookup(pending, "out")...)
	p = append(p, del(pending)...)
	p = append(p,
		asm.LoadMapPtr(asm.R1, conns),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, tuple),
		asm.Mov.Reg(asm.R3, fp), asm.Add.Imm(asm.R3, key),
		asm.Mov.Imm(asm.R4, unix.BPF_NOEXIST),
		asm.FnMapUpdateElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(release, 1), // the amount to add
		asm.Ja.Label("add"),
	)
	// Released: whoever deletes the entry counts it down.
	rel := lookup(conns, "out")
	rel[0] = rel[0].WithSymbol("release")
	p = append(p, rel...)
	p = append(p, del(conns)...)
	p = append(p,
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(release, -1),

		// held[0][key] += release, atomically.
		asm.StoreImm(fp, zero, 0, asm.Word).WithSymbol("add"),
		asm.LoadMapPtr(asm.R1, held),
		asm.Mov.Reg(asm.R2, fp), asm.Add.Imm(asm.R2, zero),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R2, fp, key, asm.Word),
		asm.JGE.Imm(asm.R2, socketArraySize, "out"),
		asm.LSh.Imm(asm.R2, 3),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.StoreXAdd(asm.R0, release, asm.DWord),

		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	return p
}
