// Command logger is a worker for the bench's output part: it sends
// READY=1, then writes lines to stdout at a steady rate until SIGTERM.
//
//	LOGGER_RATE  lines per second (default 10000)
//	LOGGER_LEN   bytes per line, newline included (default 100)
package main

import (
	"bufio"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	rate := envInt("LOGGER_RATE", 10000)
	size := max(envInt("LOGGER_LEN", 100), 2)
	line := []byte(strings.Repeat("x", size-1) + "\n")
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		if c, err := net.Dial("unixgram", addr); err == nil {
			c.Write([]byte("READY=1"))
			c.Close()
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	// Every 10 ms, the lines due by then: a steady rate, in small bursts.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, written := time.Now(), 0
	for {
		select {
		case <-sig:
			w.Flush()
			return
		case now := <-tick.C:
			due := int(now.Sub(start).Seconds() * float64(rate))
			for ; written < due; written++ {
				w.Write(line)
			}
			w.Flush()
		}
	}
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}
