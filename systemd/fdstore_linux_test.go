package systemd

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A fake systemd receives what Store, Remove and Barrier send: the
// messages, and with Store a duplicate of the very socket.
func TestFdStoreMessages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	s := NewFdStore()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	recv := func() (string, []int) {
		t.Helper()
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		var fds []int
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for i := range msgs {
			got, err := unix.ParseUnixRights(&msgs[i])
			if err == nil {
				fds = append(fds, got...)
			}
		}
		return string(buf[:n]), fds
	}

	if err := s.Store("handoff.s.0.1.http", int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	msg, fds := recv()
	if msg != "FDSTORE=1\nFDPOLL=0\nFDNAME=handoff.s.0.1.http" || len(fds) != 1 {
		t.Fatalf("Store sent %q with %d descriptors", msg, len(fds))
	}
	sa, err := unix.Getsockname(fds[0])
	unix.Close(fds[0])
	if a, ok := sa.(*unix.SockaddrInet4); err != nil || !ok || a.Port != ln.Addr().(*net.TCPAddr).Port {
		t.Fatalf("the stored descriptor is not the listener: %v %v", sa, err)
	}

	if err := s.Remove("handoff.s.0.1.http"); err != nil {
		t.Fatal(err)
	}
	if msg, fds := recv(); msg != "FDSTOREREMOVE=1\nFDNAME=handoff.s.0.1.http" || len(fds) != 0 {
		t.Fatalf("Remove sent %q with %d descriptors", msg, len(fds))
	}

	// The barrier returns once the descriptor sent with it is closed,
	// and not before.
	done := make(chan error, 1)
	go func() { done <- s.Barrier(10 * time.Second) }()
	msg, fds = recv()
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("Barrier sent %q with %d descriptors", msg, len(fds))
	}
	select {
	case err := <-done:
		t.Fatalf("Barrier returned (%v) before systemd closed its descriptor", err)
	default:
	}
	unix.Close(fds[0])
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A barrier nobody answers times out.
	go func() { done <- s.Barrier(200 * time.Millisecond) }()
	_, fds = recv()
	if err := <-done; err == nil {
		t.Fatal("Barrier with nobody closing its descriptor returned no error")
	}
	unix.Close(fds[0])

	// No one listening: an error, not a hang.
	conn.Close()
	if err := s.Store("handoff.l.x", int(f.Fd())); err == nil {
		t.Fatal("Store to a notify socket nobody listens on: no error")
	}
}
