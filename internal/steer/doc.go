// Package steer owns kernel-steered SO_REUSEPORT groups: for one TCP or
// UDP listener, one socket per worker slot in each of two banks, all
// bound to the same address, with a BPF program attached to the group
// that decides which socket gets each new connection (for UDP, each
// datagram). The master changes that choice as workers come and go. It
// is part of handoff, not a stable library API.
//
// # Why
//
// With one shared listening socket, a worker that is told to stop races
// the kernel: a connection accepted into the shared queue may be taken
// by the stopping worker and dropped. Here each worker accepts on its
// own socket, the master first steers new connections away from it,
// waits until its accept queue is empty and has stayed empty for a
// quiet period (WaitDrained), and only then signals it.
//
// # Layout and index stability
//
// A group with n slots has 2n sockets. Bank 0 and bank 1 of slot s are
// the group's members number 2s and 2s+1 (index): an old and a new
// generation use different banks, so during a rollover slot s of the new
// generation never shares a socket with slot s of the old one. Each
// socket is blocking, close-on-exec, never in the Go poller, bound with
// SO_REUSEPORT (and SO_REUSEADDR for TCP); TCP sockets listen with the
// kernel's maximum backlog. The master never accepts on them.
//
// The kernel keeps a group's sockets in an array, in the order they
// joined: a TCP socket joins when it listens, a UDP socket when it
// binds. The members are created one after the other, so the array
// order is index. When a member leaves the group (it is closed, or any
// process sharing it calls shutdown(2) on it) reuseport_detach_sock
// moves the last member into its place, so indices change. Hence a group
// never closes a member while it lives: scaling down only deactivates
// slots, and Grow appends new slots at the end. (A failed Grow closes
// the members it added, newest first, which leaves the others in place.)
// A worker must never shut down its listening socket; QueueLen reports
// a member that is no longer listening.
//
// A group starts with one socket alone, attaches its selector to it,
// steered to that socket, and only then adds the other members, so a
// connection arriving during construction never waits on a socket no
// worker will use. Once complete, a new group steers to bank 0 of every
// slot.
//
// # Only our sockets (Foreign)
//
// SO_REUSEPORT lets any socket of the same user join a group bound to the
// same address, and a member that attaches a program replaces the
// group's selector for everyone; a socket on an overlapping address (a
// wildcard and a specific address on one port) takes connections too.
// Either way connections would queue on sockets no worker of ours reads.
// So New first binds a plain socket (no SO_REUSEPORT; SO_REUSEADDR for
// TCP, so TIME_WAIT does not count) to the address and closes it: the
// kernel's bind check fails with EADDRINUSE if any socket listens (TCP)
// or is bound (UDP) on the address or one overlapping it, and New
// returns an error wrapping upgrade.ErrAddressInUse naming the address
// and, best effort, the processes holding the sockets (their inodes in
// /proc/net/{tcp,udp}{,6}, found in /proc/*/fd). Once the group is
// complete it checks again (closing the window between the probe and
// the first bind) and fails the same way. Join and Import build on
// sockets handed over (systemd, the previous master) and do not probe:
// those sockets are ours. Foreign counts, at any time, the sockets on
// the group's address or overlapping it whose inode is not one of the
// group's (copies in workers, systemd or a previous master share the
// inode); the master logs when it changes.
//
// # eBPF (EBPF)
//
// Where the process may load it (root, or CAP_BPF with CAP_NET_ADMIN),
// a BPF_PROG_TYPE_SK_REUSEPORT program, assembled in Go with the
// cilium/ebpf asm package, is attached with SO_ATTACH_REUSEPORT_EBPF.
// It runs for each SYN (each datagram for UDP) and sees struct
// sk_reuseport_md: the packet from the transport header on (data,
// data_end, len), eth_protocol, ip_protocol, bind_inany, hash (the
// kernel's hash of the 4-tuple, the one it would use itself) and the
// listening socket; the network header is read with
// bpf_skb_load_bytes_relative(BPF_HDR_START_NET). It picks a socket with
// bpf_sk_select_reuseport from a REUSEPORT_SOCKARRAY keyed by index,
// which does not depend on the group's order at all. The choice lives in
// a one-entry hash map without preallocation: the master replaces the
// whole value in one update (the program sees the old or the new
// choice, never a mix), and nothing is re-attached. Selection:
// least-held for TCP (see Load: the active socket holding the fewest
// connections, ties broken by a global round-robin counter incremented
// with an atomic fetch-add), the kernel's 4-tuple hash for UDP, or
// sticky by client address.
//
// The program never returns SK_DROP (that refuses the connection),
// except for a probe whose target cannot be selected (see Probes). If it
// selects nothing, SK_PASS lets the kernel hash over every member,
// inactive ones included (reuseport_select_sock's fallback; see
// TestOutOfRangeClassicIndex), so it always selects when it can.
//
// # Load: connections held (least-held selection)
//
// Round-robin alone is blind to load: a worker that is busy, or stopped,
// keeps getting its share of new connections. The accept queue does not
// show it either: a worker that serves one request at a time (gunicorn's
// sync worker) has an empty queue while it works on a slow request. What
// differs is that it holds a connection. So the kernel counts, per
// socket, the connections steered to it that are established and that
// the server's side has not closed: waiting in its accept queue, or
// accepted and still open (Held).
//
// The selector records each TCP connection it steers, its tuple (remote
// and local address as IPv6, IPv4 v4-mapped; remote port) → the chosen
// socket's key, in an LRU map (pending, 16K entries). A second program,
// on the tracepoint sock:inet_sock_set_state, counts: when a connection
// on the group's port goes from SYN_RECV to ESTABLISHED (the child
// socket is in the listener's accept queue; with SYN cookies the final
// ACK is steered, and recorded, again) it moves the entry to a hash map (conns, 64K entries, no
// preallocation) and adds one to held[key]; when the server's side
// closes (ESTABLISHED → FIN_WAIT1, or CLOSE_WAIT → LAST_ACK after the
// client closed first) or the connection is reset (→ CLOSE) it deletes
// the entry and subtracts one. A client closing first (ESTABLISHED →
// CLOSE_WAIT) does not end the count: the worker still has the
// connection, queued or in hand, and a hung or stopped worker whose
// clients gave up keeps looking busy until it closes them. Whoever
// deletes an entry owns its count, so a count never goes below zero and
// two tracers over the same maps count a connection once. Handshakes in
// progress are not counted, so one that never completes (a SYN flood, a
// client gone mid-handshake, a SYN dropped on a full queue) leaves no
// count, only a pending entry the LRU evicts. Bounds: a handshake whose
// pending entry was evicted before it completed, or a connection beyond
// the 64K counted at once, is not counted at all (neither up nor down).
//
// In ModeSteer over TCP the selector takes the round-robin counter's
// next value h and scans the n active sockets from h % n on (a bpf_loop
// callback: the verifier checks it once, where an inline loop would cost
// it one pass per possible iteration), keeping the first that holds the
// fewest and stopping at one that holds none. With equal counts that is
// the exact round robin: 64 keep-alive connections over 4 idle workers
// land 16 on each. A worker holding one more connection than the others
// gets nothing until they catch up. The count lags a handshake by the
// processing of its final ACK, so connections arriving faster than that
// can deviate from exact by the handshakes in flight. Cost (kernel BPF
// run time, BenchmarkSelector): about 0.9 µs per SYN with 4 slots (0.4
// µs before: the pending-map update and the scan), 10 µs in the worst
// case of 1024 active slots that all hold connections; the tracer, about
// 0.2 µs per TCP state change on the host (it returns after two compares
// for other ports).
//
// The tracepoint program reads only its context, whose field offsets it
// takes from the tracepoint's format file at load time, and uses no
// GPL-only helper (a BTF tracing program could read the socket directly
// but would have to be GPL). It is attached with perf_event_open and a
// BPF link. Where tracefs is not mounted (containers), the id and format
// are read from a tracefs mounted for the moment in a private mount
// namespace of a thread that then ends; nothing else sees it. If the
// tracer cannot be loaded (no tracefs, no CAP_SYS_ADMIN or CAP_PERFMON),
// nothing is counted, selection is plain round robin, LoadAware says why
// and Selection says "round-robin" instead of "least-held"; the master
// can still steer away from slots whose QueueLen grows. (Selection by
// queue length in the kernel is not possible: an SK_REUSEPORT program
// cannot read another listener's queue.) The configuration says
// least-held only while the master's tracer counts, so counts that
// nobody updates any more never steer, and it records whether the
// master counts, for the next one (Hand-over). bpf_loop needs Linux
// 5.17 and the tracer's BPF link on a perf event 5.15: on an older
// kernel the selector is built without the scan (a program named
// handoff_steer_r, which a new master recognises) and steers plain
// round robin, with LoadAware saying why. Sticky mode counts (Held) but
// selects by client address; UDP counts nothing.
//
// The master removes hung or overloaded slots from the targets with
// Steer, as before; least-held works among the targets it is given.
//
// # Classic BPF (CBPF)
//
// Without eBPF (or when asked), a classic program is attached with
// SO_ATTACH_REUSEPORT_CBPF, and replaced, atomically, whenever the
// choice changes; it needs no privilege. It runs on the packet with its
// data pointer past the TCP or UDP header, can read the network header
// through SKF_NET_OFF loads and ancillary data through SKF_AD_OFF loads,
// and returns an index into the group's array: the program maps a hash
// to the index of an active socket through a table of runs (consecutive
// slots of one bank share one block). It never returns an index out of
// range: the kernel would treat it as no choice and hash over the whole
// group, inactive members included.
//
// It can only hash, and cannot read maps: classic BPF is never
// load-aware (no Held, LoadAware says so); a busy worker keeps its share
// until the master steers away from it. In steer mode it hashes the source address and port
// itself (IPv4 source at network offset 12 and ports after IHL*4 bytes;
// IPv6 source at offset 8, 16 bytes, ports after 40 bytes): the
// ancillary flow hash SKF_AD_RXHASH is skb->hash, which is 0 for
// datagrams from unconnected UDP sockets and on NICs that deliver no
// hash, and would then send everything to one socket. The program fits
// BPF_MAXINSNS (4096) for any active set of up to MaxSlots; a sticky
// program for an active set fragmented into hundreds of runs hashes its
// fallback over the first sockets that fit.
//
// # Modes, TCP and UDP
//
// ModeSteer spreads TCP connections round-robin (eBPF) or by flow hash
// (classic BPF). UDP is never spread round-robin: the program runs per
// datagram, and round-robin would split one client's flow over workers,
// so UDP uses a flow hash in ModeSteer too. ModeSticky hashes the client
// address alone (IPv4 or IPv6, the same function in both programs and in
// clientHash) to a slot, hash % slots, and picks that slot's active
// socket: during a rollover a client moves once, from slot s of the old
// bank to slot s of the new. If the slot has no active socket the client
// is hashed over the active ones. For TCP the choice is made on the SYN.
//
// Steer with an empty set keeps the previous choice: with no worker
// ready at all, connections go on queueing on the sockets last chosen,
// for their replacements to accept; none is refused or dropped. A
// worker that dies leaves its socket's queue intact (the master holds
// the socket), and the replacement given the same descriptor accepts
// what waited.
//
// # Steered drain and the quiet period
//
// QueueLen reads the accept queue of a TCP listener (TCP_INFO: on a
// listener tcpi_unacked is the queue length and tcpi_sacked its limit)
// and, for UDP, the receive memory of the queued datagrams (SO_MEMINFO
// rmem_alloc: zero exactly when nothing waits; FIONREAD would only give
// the size of the first datagram). A handshake whose SYN was steered to
// a socket before the switch still completes onto that socket, up to a
// round trip later (longer if a SYN-ACK is lost), and QueueLen does not
// count handshakes in progress: the quiet period of WaitDrained covers
// them. A connection completing after the worker stopped waits on the
// socket until a worker uses that bank's socket again.
//
// # Hand-over and socket activation
//
// Export lists every socket (index order) and, for eBPF, the program and
// its seven maps; Import re-creates the group in a new master from the
// received descriptors and re-applies the choice. The program stays
// attached to the group as long as one member is open anywhere (the
// group holds it, and it holds its maps), so steering never pauses. A
// socket is in at most one socket array (EBUSY otherwise): a master
// whose eBPF layout differs switches to a classic program mirroring the
// choice, empties the old array, and builds a new selector. SCM_RIGHTS
// carries at most 253 descriptors per message (SCM_MAX_FD): a large
// group needs several.
//
// Join builds a group around a socket passed by systemd with
// ReusePort=yes (it becomes bank 0 of slot 0; it should be alone in its
// group). systemd keeps its copy, so after a restart the socket is still
// in the previous instance's socket array: Join attaches its program
// first, which releases the old one, and waits for the kernel to free
// the old array. A socket without SO_REUSEPORT yields ErrUnsupported,
// as do unix sockets: the caller logs the error and falls back to one
// shared socket.
//
// # After a crash (Restore)
//
// Under systemd the master keeps every socket of a group, and its eBPF
// selector's descriptors, in systemd's fd store. When the master dies
// (SIGKILL, a crash) the group lives on in systemd's copies, with the
// dead master's selector still attached: it steers new connections into
// the backlogs of its last choice, where they wait for the next master.
// Restore rebuilds the group from those copies in the restarted master.
// With the selector's descriptors it adopts program and maps (as Import
// does) and reads the choice from the configuration map, so steering
// never pauses and Active says on which bank each slot's connections
// wait: the master starts its first generation there. Held counts are
// reset: the dead master's tracer missed the closes of its workers'
// connections. Without them it guesses the choice from the queues (the
// bank holding more, per slot), attaches a classic program at once
// (replacing the dead selector, whose socket array the kernel then
// frees), and builds a new eBPF selector once the sockets are free to
// join its array. Members are checked as on Import, and the address
// against the spec: a configuration changed while no master ran makes
// Restore fail, and the caller binds anew.
//
// A group holds 2×slots descriptors per listener (2048 at MaxSlots),
// which the open-file limit must allow.
//
// # Probes (Dial)
//
// A readiness probe must reach one worker's socket, usually an inactive
// one (a new generation on probation gets no traffic), and a connection
// from the master to the listener's address is steered like any
// client's. Group.Dial therefore marks its connection so that the
// program recognises it: it binds a TCP socket to the listener's address
// (127.0.0.1 or ::1 for a wildcard; the dual-stack wildcard falls back
// to 127.0.0.1 without ::1) with port 0, reads the port the kernel gave
// it, registers "this source address and port → that socket's index" in
// the selector, connects, and unregisters as soon as connect returned
// (the connection is then in the target's accept queue: only the SYN
// goes through the selection) or failed, while the socket still holds
// its port. The worker sees an ordinary connection from the master's
// loopback address.
//
// Why the source port is a key: bind gives a port that no other socket
// holds on that address (a port taken by bind is also skipped by other
// sockets' connect-time port choice), and the probe's socket keeps it
// until after the entry is gone, so while the entry exists no other
// connection can come from that address and port. Both programs compare
// the source address as well, so a client elsewhere (another address,
// the other family, or the outside world) using the same port number is
// steered as usual. Probes take no turn of the round robin, are not
// counted in Held (the selector records no pending entry for them), and
// change nothing else.
//
// With eBPF the entry goes into a fourth map, a hash keyed by the TCP
// source port (2 bytes, network order) whose value holds the target's
// key and the source address; the program looks it up first, for TCP
// only. During the listener lookup skb->data, where bpf_skb_load_bytes
// counts from, points at the TCP header for IPv4 and IPv6 (tcp_v4_rcv
// and tcp_v6_rcv have pulled the network header; TestKernelTCPHeaderAtData
// checks it, and md->len is the header length of a SYN), so the source
// port is at offset 0. A probe whose target cannot be selected (its
// socket left the group) gets SK_DROP, a refused connection, rather than
// reaching another socket. With classic BPF the program is rebuilt with
// a prefix that returns the target's index for the probe's source
// address and port (read after IHL*4 bytes of an IPv4 header, after
// the 40 of IPv6) and re-attached, twice per probe; programs always
// leave room for the longest prefix, so the choice for other
// connections is the same with probes in flight or without. At most 64
// probes per group are in flight (the size of the eBPF map, and the
// room left in the classic program); one more is an error.
//
// A successful Dial means the kernel completed the handshake onto the
// target's queue, not that the worker accepted it (a listener completes
// handshakes by itself): a probe that must see the worker answer sends a
// request, or watches QueueLen. A target whose queue is full drops the
// SYN, and Dial waits until its context ends. A SYN retransmitted after
// a failed Dial unregistered goes wherever normal traffic goes, but the
// probe's socket, closed by then, answers the SYN-ACK with a reset, so
// no connection is made there. If the queue overflows and SYN cookies
// answer instead, the final ACK is steered again on arrival, possibly
// after the entry is gone: under a SYN flood a probe may land elsewhere.
//
// Layout 3 added the held, pending and conns maps. The tracepoint
// program and its link are not handed over: a link's attachment belongs
// to the process that holds it, and the program is tied to the maps by
// descriptors compiled into it. A new master of layout 3 loads and
// attaches its own tracer over the adopted maps, so connections
// established before the hand-over keep their entries and counts and are
// counted down when they close; while both masters' tracers are
// attached, deleting the entry first makes one of them count. A master
// handed layout 2 or 1 builds a new selector: its counts start at zero,
// connections made before are never counted (their closes find no
// entry), so load-awareness is partial until they end. So does a master
// adopting layout 3 from one that did not count (its tracer had failed):
// it empties the adopted held, pending and conns maps rather than keep
// counts whose closes nobody saw.
//
// A new master drops probe entries it finds in a handed-over probe map
// (its predecessor must not Dial after Export; an entry left by one that
// stopped in the middle of a Dial would misroute that address and
// port). Layout 2 added the probe map; a group handed over by a master
// of layout 1 gets a new selector.
package steer
