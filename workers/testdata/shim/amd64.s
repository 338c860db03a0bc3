# handoff's exec shim for linux/amd64: a static program of a few hundred
# bytes, so that starting a worker costs one extra execve and no runtime.
#
# The master starts it with
#   argv = [path of the command, the command's argv[0], its arguments...]
#   envp = [..., "LISTEN_PID=" followed by 20 placeholder bytes, ...]
# It writes its own pid (which is the worker's: execve keeps it) over the
# first LISTEN_PID's value, NUL-terminated, and executes argv[0] with
# argv+1 and envp. An argv[0] of /proc/self/fd/N (a generation's binary,
# held open by the master) gets FD_CLOEXEC on N first: the kernel resolves
# the path before it closes such descriptors, so the worker runs that file
# and does not inherit the descriptor.
# If execve fails it writes "handoff: cannot execute worker command PATH"
# to stderr and exits with status 127, as a shell does.
#
# Assembled by workers/shim_test.go (as + objcopy -O binary) to check the
# bytes in workers/shim_linux_amd64.go.
	.text
	.globl _start
_start:
	mov	(%rsp), %rcx		# argc
	lea	8(%rsp), %r12		# argv
	lea	16(%rsp,%rcx,8), %r13	# envp = argv + argc + 1
	mov	%r13, %rbx
5:	mov	(%rbx), %rdi		# find the entry that starts with key
	test	%rdi, %rdi
	jz	6f			# none: execute as is
	lea	key(%rip), %rsi
	xor	%ecx, %ecx
7:	mov	(%rsi,%rcx), %al	# stops at the entry's NUL at the latest
	cmp	%al, (%rdi,%rcx)
	jne	8f
	inc	%ecx
	cmp	$11, %ecx
	jne	7b
	add	$11, %rdi		# past "LISTEN_PID="
	mov	$39, %eax		# getpid
	syscall
	sub	$32, %rsp		# a digit buffer, filled backwards
	lea	31(%rsp), %rsi
	movb	$0, (%rsi)
	mov	$10, %r8d
1:	xor	%edx, %edx
	div	%r8			# rax = rax / 10, rdx = remainder
	add	$48, %dl
	dec	%rsi
	mov	%dl, (%rsi)
	test	%rax, %rax
	jnz	1b
2:	mov	(%rsi), %al		# copy the digits and the NUL
	mov	%al, (%rdi)
	inc	%rsi
	inc	%rdi
	test	%al, %al
	jnz	2b
	jmp	6f
8:	add	$8, %rbx
	jmp	5b
6:	mov	(%r12), %rdi		# argv[0] is /proc/self/fd/N?
	lea	fdpfx(%rip), %rsi
	xor	%ecx, %ecx
9:	mov	(%rsi,%rcx), %al	# stops at argv[0]'s NUL at the latest
	cmp	%al, (%rdi,%rcx)
	jne	10f
	inc	%ecx
	cmp	$14, %ecx
	jne	9b
	add	$14, %rdi
	xor	%esi, %esi		# N
11:	movzbl	(%rdi), %eax
	sub	$48, %eax
	cmp	$9, %eax
	ja	12f			# not a digit (the NUL): N is complete
	imul	$10, %esi, %esi
	add	%eax, %esi
	inc	%rdi
	jmp	11b
12:	mov	%esi, %edi		# fcntl(N, F_SETFD, FD_CLOEXEC)
	mov	$2, %esi
	mov	$1, %edx
	mov	$72, %eax
	syscall
10:	mov	(%r12), %rdi		# execve(argv[0], argv + 1, envp)
	lea	8(%r12), %rsi
	mov	%r13, %rdx
	mov	$59, %eax
	syscall
	mov	$1, %eax		# write(2, msg, msglen)
	mov	$2, %edi
	lea	msg(%rip), %rsi
	mov	$msgend-msg, %edx
	syscall
	mov	(%r12), %rsi		# write(2, argv[0], strlen(argv[0]))
	xor	%edx, %edx
3:	cmpb	$0, (%rsi,%rdx)
	je	4f
	inc	%rdx
	jmp	3b
4:	mov	$1, %eax
	mov	$2, %edi
	syscall
	mov	$1, %eax		# write(2, "\n", 1)
	mov	$2, %edi
	lea	msgend(%rip), %rsi
	mov	$1, %edx
	syscall
	mov	$127, %edi		# exit_group(127)
	mov	$231, %eax
	syscall
key:
	.ascii	"LISTEN_PID="
msg:
	.ascii	"handoff: cannot execute worker command "
msgend:
	.ascii	"\n"
fdpfx:
	.ascii	"/proc/self/fd/"
