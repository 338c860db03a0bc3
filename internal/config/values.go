package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/workers"
)

// The parsers below judge one raw value and say what is wrong with it
// without naming the key: the caller adds where the value came from.

// ParseWorkers parses "auto" or a count from 1 to workers.MaxWorkers.
// "auto" is GOMAXPROCS now.
func ParseWorkers(s string) (n int, auto bool, err error) {
	return parseWorkers(s, runtime.GOMAXPROCS(0))
}

// parseWorkers is ParseWorkers with "auto" as autoN.
func parseWorkers(s string, autoN int) (n int, auto bool, err error) {
	if s == "auto" {
		return autoN, true, nil
	}
	n, err = strconv.Atoi(s)
	if err != nil || n < 1 || n > workers.MaxWorkers {
		return 0, false, fmt.Errorf("want auto or a number from 1 to %d (one per core is usual; this machine has %d)", workers.MaxWorkers, runtime.NumCPU())
	}
	return n, false, nil
}

func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > workers.MaxWorkers {
		return 0, fmt.Errorf("want a number from 1 to %d", workers.MaxWorkers)
	}
	return n, nil
}

// parseDuration parses a Go duration ("1m30s"). A bare number other than
// 0 is refused: its unit would be a guess.
func parseDuration(s string, allowZero bool) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("want a duration with a unit, e.g. %ss", s)
		}
		return 0, errors.New("want a duration such as 30s, 1m or 500ms")
	}
	switch {
	case d < 0:
		return 0, errors.New("must not be negative")
	case d == 0 && !allowZero:
		return 0, errors.New("must be positive")
	}
	return d, nil
}

// ParseReady parses notify, delay=D, tcp or http=/PATH.
func ParseReady(s string) (Ready, error) {
	mode, arg, hasArg := strings.Cut(s, "=")
	switch ReadyMode(mode) {
	case ReadyNotify, ReadyTCP:
		if hasArg {
			return Ready{}, fmt.Errorf("%s takes no =VALUE", mode)
		}
		return Ready{Mode: ReadyMode(mode)}, nil
	case ReadyDelay:
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return Ready{}, errors.New("want delay=DURATION, e.g. delay=2s")
		}
		return Ready{Mode: ReadyDelay, Delay: d}, nil
	case ReadyHTTP:
		if !strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, "//") {
			return Ready{}, errors.New("want http=/PATH, e.g. http=/healthz (the path starts with /)")
		}
		u, err := url.ParseRequestURI(arg)
		if err != nil || u.Host != "" || strings.ContainsAny(arg, " \t\r\n#") {
			return Ready{}, errors.New("want http=/PATH with a plain URL path (and query), e.g. http=/healthz")
		}
		return Ready{Mode: ReadyHTTP, Path: arg}, nil
	}
	return Ready{}, errors.New("want notify, delay=DURATION, tcp or http=/PATH")
}

// ParseHealth parses a health check: empty (off), tcp or http=/PATH.
func ParseHealth(s string) (Ready, error) {
	if s == "" {
		return Ready{}, nil
	}
	r, err := ParseReady(s)
	if err != nil || r.Mode != ReadyTCP && r.Mode != ReadyHTTP {
		return Ready{}, errors.New("want tcp or http=/PATH, e.g. http=/healthz")
	}
	return r, nil
}

// ParseSignal parses a signal name (SIGTERM, TERM, term) or number.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, errors.New("unknown signal")
}

func parseChoice(s string, choices ...string) error {
	for _, c := range choices {
		if s == c {
			return nil
		}
	}
	last := len(choices) - 1
	return fmt.Errorf("want %s or %s", strings.Join(choices[:last], ", "), choices[last])
}

func parseLogLevel(s string) error {
	if s == "" || hclog.LevelFromString(s) == hclog.NoLevel {
		return errors.New("want trace, debug, info, warn or error")
	}
	return nil
}

// sizeUnits are the suffixes ParseSize knows. K, M, G and T are
// 1024-based, as in systemd's MemoryMax= and docker's --memory.
var sizeUnits = map[string]float64{
	"": 1, "B": 1,
	"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
}

// minMemory is the smallest non-zero memory limit accepted: less is
// surely a forgotten unit.
const minMemory = 1 << 20

// ParseSize parses a memory size: a number, optionally with a fraction,
// then a unit (B, kB, MB, GB, TB; KiB, MiB, GiB, TiB; K, M, G, T as
// 1024-based), as in 512MiB, 1.5GiB or 800MB. "0" is zero (off); other
// sizes below 1 MiB are refused.
func ParseSize(s string) (int64, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' })
	unit := s[len(num):]
	num = strings.TrimSuffix(num, " ")
	mult, ok := sizeUnits[unit]
	if num == "" || !ok || strings.ContainsAny(num, "+-eE_ ") {
		return 0, errors.New("want a size such as 512MiB, 1GiB or 800MB (or 0 for none)")
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errors.New("want a size such as 512MiB, 1GiB or 800MB (or 0 for none)")
	}
	b := v * mult
	if b >= math.MaxInt64/2 {
		return 0, errors.New("too large")
	}
	n := int64(b)
	if n != 0 && n < minMemory {
		return 0, fmt.Errorf("%d bytes is below 1MiB: a unit is missing (512MiB, 1GiB)?", n)
	}
	return n, nil
}

// ParseAdmin checks a HOST:PORT to listen on. HOST may be empty (every
// address), an IP address or a name. An empty string is "off" (so that
// --admin "" turns off a config file's admin).
func ParseAdmin(s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want HOST:PORT, e.g. 127.0.0.1:9100 or [::1]:9100")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("bad port %q: want a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// parseMode parses a permission mode in octal: "0660", "660".
func parseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 || len(s) < 3 {
		return 0, errors.New("want an octal mode such as 0660")
	}
	if m&0o222 == 0 {
		return 0, errors.New("nobody could connect: connecting to a unix socket needs write permission")
	}
	return uint32(m), nil
}

// handoffEnv reports whether handoff sets (or clears) the variable key in
// every worker's environment, so a config cannot.
func handoffEnv(key string) bool {
	switch {
	case key == "NOTIFY_SOCKET", key == "HANDOFF_WORKER", key == "HANDOFF_GENERATION",
		strings.HasPrefix(key, "LISTEN_"), strings.HasPrefix(key, "WATCHDOG_"),
		strings.HasPrefix(key, "HANDOFF_INTERNAL_"), strings.HasPrefix(key, "TABLEFLIP_"):
		return true
	}
	return false
}

func checkEnvKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty variable name")
	case strings.ContainsAny(key, "=\x00"):
		return errors.New("a variable name cannot contain '=' or NUL")
	case handoffEnv(key):
		return fmt.Errorf("%s is set by handoff for each worker", key)
	}
	return nil
}
