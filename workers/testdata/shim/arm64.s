// handoff's exec shim for linux/arm64: a static program of a few hundred
// bytes, so that starting a worker costs one extra execve and no runtime.
//
// The master starts it with
//   argv = [path of the command, the command's argv[0], its arguments...]
//   envp = [..., "LISTEN_PID=" followed by 20 placeholder bytes, ...]
// It writes its own pid (which is the worker's: execve keeps it) over the
// first LISTEN_PID's value, NUL-terminated, and executes argv[0] with
// argv+1 and envp.
// If execve fails it writes "handoff: cannot execute worker command PATH"
// to stderr and exits with status 127, as a shell does.
//
// Assembled by workers/shim_test.go (aarch64-linux-gnu-as + objcopy -O
// binary) to check the bytes in workers/shim_linux_arm64.go.
	.text
	.globl _start
_start:
	ldr	x1, [sp]		// argc
	add	x19, sp, #8		// argv
	add	x20, x19, x1, lsl #3
	add	x20, x20, #8		// envp = argv + argc + 1
	mov	x21, x20
5:	ldr	x2, [x21]		// find the entry that starts with key
	cbz	x2, 6f			// none: execute as is
	adr	x7, key
	mov	x9, #0
7:	ldrb	w10, [x7, x9]		// stops at the entry's NUL at the latest
	ldrb	w11, [x2, x9]
	cmp	w10, w11
	b.ne	8f
	add	x9, x9, #1
	cmp	x9, #11
	b.ne	7b
	add	x2, x2, #11		// past "LISTEN_PID="
	mov	x8, #172		// getpid
	svc	#0
	sub	sp, sp, #32		// a digit buffer, filled backwards
	add	x3, sp, #31
	strb	wzr, [x3]
	mov	x4, #10
1:	udiv	x5, x0, x4
	msub	x6, x5, x4, x0		// x6 = x0 - x5*10
	add	x6, x6, #48
	sub	x3, x3, #1
	strb	w6, [x3]
	mov	x0, x5
	cbnz	x0, 1b
2:	ldrb	w6, [x3], #1		// copy the digits and the NUL
	strb	w6, [x2], #1
	cbnz	w6, 2b
	b	6f
8:	add	x21, x21, #8
	b	5b
6:	ldr	x0, [x19]		// argv[0] is /proc/self/fd/N?
	adr	x7, fdpfx
	mov	x9, #0
9:	ldrb	w10, [x7, x9]		// stops at argv[0]'s NUL at the latest
	ldrb	w11, [x0, x9]
	cmp	w10, w11
	b.ne	10f
	add	x9, x9, #1
	cmp	x9, #14
	b.ne	9b
	add	x0, x0, #14
	mov	x3, #0			// N
	mov	x5, #10
11:	ldrb	w4, [x0], #1
	sub	w4, w4, #48
	cmp	w4, #9
	b.hi	12f			// not a digit (the NUL): N is complete
	madd	x3, x3, x5, x4
	b	11b
12:	mov	x0, x3			// fcntl(N, F_SETFD, FD_CLOEXEC)
	mov	x1, #2
	mov	x2, #1
	mov	x8, #25
	svc	#0
10:	ldr	x0, [x19]		// execve(argv[0], argv + 1, envp)
	add	x1, x19, #8
	mov	x2, x20
	mov	x8, #221
	svc	#0
	mov	x0, #2			// write(2, msg, msglen)
	adr	x1, msg
	mov	x2, #(msgend - msg)
	mov	x8, #64
	svc	#0
	ldr	x1, [x19]		// write(2, argv[0], strlen(argv[0]))
	mov	x2, #0
3:	ldrb	w3, [x1, x2]
	cbz	w3, 4f
	add	x2, x2, #1
	b	3b
4:	mov	x0, #2
	mov	x8, #64
	svc	#0
	mov	x0, #2			// write(2, "\n", 1)
	adr	x1, msgend
	mov	x2, #1
	mov	x8, #64
	svc	#0
	mov	x0, #127		// exit_group(127)
	mov	x8, #94
	svc	#0
key:
	.ascii	"LISTEN_PID="
msg:
	.ascii	"handoff: cannot execute worker command "
msgend:
	.ascii	"\n"
fdpfx:
	.ascii	"/proc/self/fd/"
