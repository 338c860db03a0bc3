package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Datagram is one datagram received on a NotifySocket: the parsed message,
// or the reason it was dropped.
type Datagram struct {
	Msg Message
	Err error
	// PID is the sender's process, as the kernel vouches for it
	// (SCM_CREDENTIALS); 0 if it did not say.
	PID int
}

// NotifySocket is the receiving end of one worker's NOTIFY_SOCKET. Giving
// each worker its own socket means the socket itself says who spoke, so a
// helper process the worker runs (systemd-notify from a shell script) is
// credited to its worker even if it exits before the datagram is read, and
// no worker can speak for another.
type NotifySocket struct {
	conn    *net.UnixConn
	path    string
	c       chan Datagram
	closing atomic.Bool
}

// ListenNotify creates a notify socket at path, which must not exist.
// The kernel attaches each sender's credentials (SO_PASSCRED), so that
// the receiver can check who spoke (Datagram.PID); file descriptors sent
// along with a datagram are never accepted: the kernel discards them.
func ListenNotify(path string) (*NotifySocket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// Anyone the worker runs (possibly as another user after dropping
	// privileges) must be able to write to it; the directory guards it.
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	if err := passCred(conn); err != nil {
		conn.Close()
		os.Remove(path)
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	s := &NotifySocket{conn: conn, path: path, c: make(chan Datagram, 16)}
	go s.read()
	return s, nil
}

// socketPath is the value for the worker's NOTIFY_SOCKET.
func (s *NotifySocket) socketPath() string { return s.path }

// Datagrams yields what arrives on the socket, in order. After Drain it
// yields what was already queued and is then closed.
func (s *NotifySocket) Datagrams() <-chan Datagram { return s.c }

// Drain stops the wait for new datagrams. Those already queued are still
// delivered on Datagrams, which is closed after the last one, so a READY=1
// sent just before a worker exited is not lost. The socket's path is
// removed once the queue is empty.
func (s *NotifySocket) Drain() {
	if s.closing.Swap(true) {
		return
	}
	// Wake the reader; it then empties the queue without waiting.
	s.conn.SetReadDeadline(time.Now())
}

func (s *NotifySocket) read() {
	defer close(s.c)
	defer os.Remove(s.path)
	defer s.conn.Close()
	buf := make([]byte, maxMessage+1)
	oob := make([]byte, oobSize)
	for {
		n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if s.closing.Load() {
				s.drainQueued(buf)
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.c <- Datagram{Err: fmt.Errorf("read notify socket: %w", err)}
			continue
		}
		s.c <- decode(buf[:n], flags, oob[:oobn])
	}
}

// drainQueued delivers what is still queued without waiting for more.
func (s *NotifySocket) drainQueued(buf []byte) {
	oob := make([]byte, oobSize)
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	var queued []Datagram
	rc.Control(func(fd uintptr) {
		for {
			n, oobn, flags, _, err := unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			queued = append(queued, decode(buf[:n], flags, oob[:oobn]))
		}
	})
	for _, d := range queued {
		s.c <- d
	}
}

func decode(b []byte, flags int, oob []byte) Datagram {
	pid := senderPID(oob)
	if flags&unix.MSG_TRUNC != 0 || len(b) > maxMessage {
		return Datagram{Err: fmt.Errorf("datagram larger than %d bytes", maxMessage), PID: pid}
	}
	m, err := parseMessage(b)
	return Datagram{Msg: m, Err: err, PID: pid}
}
