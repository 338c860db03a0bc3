//go:build linux

package steer

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/upgrade"
)

// childEnv selects a role for the test binary run as a child process.
const childEnv = "HANDOFF_STEER_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "hold":
		childHold()
	case "accept":
		childAccept()
	case "unprivileged":
		childUnprivileged()
	default:
		fmt.Fprintf(os.Stderr, "unknown child role %q\n", os.Getenv(childEnv))
		os.Exit(2)
	}
}

// childHold holds fd 3 (a worker that never accepts) until killed.
func childHold() {
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// childAccept accepts N connections on fd 3 (blocking, as a worker
// would), answers each with "hello\n" and exits.
func childAccept() {
	n, _ := strconv.Atoi(os.Getenv("N"))
	for i := 0; i < n; i++ {
		c, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			os.Exit(1)
		}
		if _, err := unix.Write(c, []byte("hello\n")); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(1)
		}
		unix.Close(c)
	}
	os.Exit(0)
}

// childUnprivileged runs as nobody: it builds a group with Auto, steers
// it to one socket and checks that connections land there. It prints
// "mechanism <m>", "fallback <reason>" and "landed <n>" lines.
func childUnprivileged() {
	fail := func(f string, a ...any) {
		fmt.Printf("error "+f+"\n", a...)
		os.Exit(1)
	}
	spec, _ := upgrade.ParseSpec("t=tcp://127.0.0.1:0")
	g, err := New(spec, Options{Slots: 2})
	if err != nil {
		fail("new: %v", err)
	}
	defer g.Close()
	fmt.Printf("mechanism %s\n", g.Mechanism())
	fmt.Printf("fallback %v\n", g.Fallback())
	if err := g.Steer([]Target{{Slot: 1, Bank: 1}}); err != nil {
		fail("steer: %v", err)
	}
	for i := 0; i < 5; i++ {
		c, err := net.DialTimeout("tcp", g.Addr(), 10*time.Second)
		if err != nil {
			fail("dial: %v", err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := g.QueueLen(1, 1)
		if err != nil {
			fail("queue: %v", err)
		}
		others := 0
		for _, t := range []Target{{0, 0}, {0, 1}, {1, 0}} {
			o, _ := g.QueueLen(t.Bank, t.Slot)
			others += o
		}
		if others > 0 {
			fail("%d connections on sockets steered away from", others)
		}
		if n == 5 {
			fmt.Printf("landed %d\n", n)
			os.Exit(0)
		}
		if time.Now().After(deadline) {
			fail("only %d of 5 connections queued", n)
		}
		time.Sleep(time.Millisecond)
	}
}
