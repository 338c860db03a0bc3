package workers

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// A worker's LISTEN_PID must be its own pid, which is only known after
// fork. The master therefore starts a shim that writes its pid into the
// environment and executes the command, keeping the pid.
//
// The shim is a static program of a few hundred bytes (shimCode, per
// architecture; its source is in testdata/shim), written once into a
// sealed memfd and executed as /proc/self/fd/N: one extra execve, about
// half a millisecond, and no Go runtime starting up. Where that is not
// possible (another architecture, memfds that may not be executed) the
// master executes its own binary instead, whose ExecShim does the same
// job at the cost of a Go runtime start, several milliseconds.
type shim struct {
	fd     int
	path   string
	broken bool // the kernel refused to execute it: use the fallback
}

// shimPlaceholder is the environment entry the shim overwrites with its
// pid: 20 digits hold any pid.
var shimPlaceholder = "LISTEN_PID=" + strings.Repeat("0", 20)

// shimMinFd keeps the shim's descriptor clear of the ones a child's
// descriptors 0…n are moved through between fork and exec.
const shimMinFd = 1000

func newShim() (*shim, error) {
	if len(shimCode) == 0 {
		return nil, errors.New("no built-in shim for this architecture")
	}
	img := shimELF(shimCode, shimMachine)
	fd, err := unix.MemfdCreate("handoff-exec-shim", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3, which added MFD_EXEC
		fd, err = unix.MemfdCreate("handoff-exec-shim", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	fail := func(what string, err error) (*shim, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n, err := unix.Write(fd, img); err != nil || n != len(img) {
		if err == nil {
			err = errors.New("short write")
		}
		return fail("write shim", err)
	}
	if err := unix.Fchmod(fd, 0o555); err != nil {
		return fail("chmod shim", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fail("seal shim", err)
	}
	high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, shimMinFd)
	if err != nil {
		return fail("move shim descriptor", err)
	}
	unix.Close(fd)
	s := &shim{fd: high, path: fmt.Sprintf("/proc/self/fd/%d", high)}
	if _, err := os.Stat(s.path); err != nil {
		unix.Close(high)
		return nil, fmt.Errorf("shim: %w", err)
	}
	return s, nil
}

// wrap returns what to execute so that the command at path runs with
// argv and env plus LISTEN_PID=<its pid>.
func (s *shim) wrap(path string, argv, env []string) (string, []string, []string) {
	if s == nil || s.broken {
		return "/proc/self/exe", argv, append(env[:len(env):len(env)], shimEnv+"="+path)
	}
	return s.path, append([]string{path}, argv...), append([]string{shimPlaceholder}, env...)
}

// failed reports whether err is the kernel refusing to execute the shim
// itself (exec_path is the shim's); the shim is then not used again.
func (s *shim) failed(execPath string, err error) bool {
	if s == nil || s.broken || execPath != s.path {
		return false
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOEXEC) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		s.broken = true
		return true
	}
	return false
}

func (s *shim) close() {
	if s != nil {
		unix.Close(s.fd)
	}
}

// shimELF wraps machine code in the smallest executable ELF file: a
// header and one loadable, executable segment, entered at the code.
func shimELF(code string, machine elf.Machine) []byte {
	const base = 0x400000
	hdrLen := binary.Size(elf.Header64{}) + binary.Size(elf.Prog64{})
	total := uint64(hdrLen + len(code))
	h := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     base + uint64(hdrLen),
		Phoff:     uint64(binary.Size(elf.Header64{})),
		Ehsize:    uint16(binary.Size(elf.Header64{})),
		Phentsize: uint16(binary.Size(elf.Prog64{})),
		Phnum:     1,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	ph := elf.Prog64{
		Type:   uint32(elf.PT_LOAD),
		Flags:  uint32(elf.PF_R | elf.PF_X),
		Vaddr:  base,
		Paddr:  base,
		Filesz: total,
		Memsz:  total,
		Align:  0x1000,
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, h)
	binary.Write(&b, binary.LittleEndian, ph)
	b.WriteString(code)
	return b.Bytes()
}
