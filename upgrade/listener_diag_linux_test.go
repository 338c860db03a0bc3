//go:build linux

package upgrade

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sock_diag and /proc/net agree on a listener and an unconnected UDP
// socket of this test: address, port and inode.
func TestDiagMatchesProcNet(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, c := range []struct {
		sotype   int
		state    uint8
		procText string
		file     string
		port     int
	}{
		{unix.SOCK_STREAM, 10, "0A", "/proc/net/tcp", ln.Addr().(*net.TCPAddr).Port},
		{unix.SOCK_DGRAM, 7, "07", "/proc/net/udp", pc.LocalAddr().(*net.UDPAddr).Port},
	} {
		diag, err := diagSockets(unix.AF_INET, c.sotype, c.state)
		if err != nil {
			t.Logf("sock_diag for type %d: %v (Overlapping falls back to %s)", c.sotype, err, c.file)
			continue
		}
		proc, err := readProcNet(c.file, c.procText)
		if err != nil {
			t.Fatal(err)
		}
		find := func(es []procEntry) []string {
			var out []string
			for _, e := range es {
				if e.port == c.port {
					out = append(out, fmt.Sprintf("%s inode %d", net.JoinHostPort(e.ip.String(), strconv.Itoa(e.port)), e.inode))
				}
			}
			slices.Sort(out)
			return out
		}
		d, p := find(diag), find(proc)
		if len(d) != 1 || !slices.Equal(d, p) || !strings.HasPrefix(d[0], "127.0.0.1:") {
			t.Errorf("type %d port %d: sock_diag %q, /proc/net %q", c.sotype, c.port, d, p)
		}
	}
}
