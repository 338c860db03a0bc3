package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/handoff-dev/handoff/internal/control"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Pos is FILE:LINE:COL for a problem in the config file, else empty.
	Pos string
	// Msg says what is wrong, naming the flag or key and its value.
	Msg string
	// Runtime is set when the machine rather than the text is wrong: a
	// command, user or file that does not exist, a setting that needs
	// root. The command line exits 1 for those, 2 for the others.
	Runtime bool
}

// String renders the problem as one line.
func (p Problem) String() string {
	if p.Pos != "" {
		return p.Pos + ": " + p.Msg
	}
	return p.Msg
}

// MaxProblems is how many problems an Error lists; the ones found after
// them are only counted (Error.More).
const MaxProblems = 20

// Error is every problem found in a configuration, the first
// MaxProblems of them listed. Its text has one problem a line, then
// "and N more problems" if some were left out.
type Error struct {
	Problems []Problem
	// More counts the problems found after the first MaxProblems.
	More int
	// moreUsage is set when one of the problems left out is a usage
	// error.
	moreUsage bool
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems), len(e.Problems)+1)
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if e.More > 0 {
		lines = append(lines, fmt.Sprintf("and %d more %s", e.More, plural(e.More, "problem", "problems")))
	}
	return strings.Join(lines, "\n")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Usage reports whether some problem is in the text (a usage error)
// rather than on the machine.
func (e *Error) Usage() bool {
	for _, p := range e.Problems {
		if !p.Runtime {
			return true
		}
	}
	return e.moreUsage
}

// origin is where a value came from: a flag, the config file, or the
// default when neither set it.
type origin struct {
	flag bool       // the command line
	pos  *hcl.Range // the config file: the value's range
	lit  string     // the config file: the value as written
}

func (o origin) where() string {
	if o.pos == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d", o.pos.Filename, o.pos.Start.Line, o.pos.Start.Column)
}

// describe names a setting and its value the way its source wrote them:
// `--workers "0"`, `workers = 0`, `--ready-timeout 60s (the default)`.
func (o origin) describe(k Key, raw string) string {
	switch {
	case o.pos != nil:
		return k.Name + " = " + o.lit
	case o.flag:
		return fmt.Sprintf("--%s %q", k.Flag, raw)
	}
	return fmt.Sprintf("--%s %s (the default)", k.Flag, raw)
}

type value struct {
	raw  string
	from origin
}

type listenValue struct {
	name, address string
	opts          map[string]value // mode, owner, group
	from          origin           // the flag, or the block's label
	addrFrom      origin
	flagText      string // the whole --listen value
}

type envValue struct {
	key, val string
	from     origin
}

// raw is every setting as given, before validation.
type raw struct {
	scalars     map[string]value
	listen      []listenValue
	env         []envValue
	command     []string
	commandFrom origin
	hasCommand  bool
}

// problems collects Problems: the first MaxProblems, and a count of the
// rest, so a file of a thousand mistakes costs no more than one of
// twenty.
type problems struct {
	list      []Problem
	more      int
	moreUsage bool
}

func (p *problems) add(from origin, runtime bool, format string, args ...any) {
	p.addProblem(Problem{Pos: from.where(), Msg: fmt.Sprintf(format, args...), Runtime: runtime})
}

func (p *problems) addProblem(pr Problem) {
	if len(p.list) >= MaxProblems {
		p.more++
		p.moreUsage = p.moreUsage || !pr.Runtime
		return
	}
	p.list = append(p.list, pr)
}

// addLazy adds the problem f makes, calling f only if the problem will
// be listed (a position can be dear to compute).
func (p *problems) addLazy(f func() Problem) {
	if len(p.list) >= MaxProblems {
		p.more++
		p.moreUsage = true // the problems made lazily are in the text
		return
	}
	p.list = append(p.list, f())
}

// any reports whether a problem was found.
func (p *problems) any() bool { return len(p.list) > 0 }

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Problems: p.list, More: p.more, moreUsage: p.moreUsage}
}

// system is what Load looks at besides its input.
type system struct {
	euid, egid int
	groups     []int // the process's supplementary groups
	journal    bool  // stderr is the systemd journal
	// autoWorkers is what workers = "auto" means: GOMAXPROCS when the
	// master started (it lowers its own GOMAXPROCS afterwards, so a
	// reload must not look again).
	autoWorkers int
}

func thisSystem() *system {
	s := &system{euid: os.Geteuid(), egid: os.Getegid(), journal: StderrIsJournal(os.Getenv("JOURNAL_STREAM"), os.Stderr),
		autoWorkers: runtime.GOMAXPROCS(0)}
	s.groups, _ = os.Getgroups()
	return s
}

// Load reads the config file at path (none if empty), applies the
// command-line flags over it and validates the result. It changes
// nothing: it only reads the file and looks up the command, users and
// groups. A failure is an *Error listing every problem found.
func Load(path string, flags Flags) (*Options, error) {
	return load(path, flags, thisSystem())
}

func load(path string, flags Flags, sys *system) (*Options, error) {
	var p problems
	r := &raw{scalars: map[string]value{}}
	if path != "" {
		// The file's problems do not stop the checks: the values it
		// gave are validated too, so one run reports every problem.
		// Only a file that could not be read or parsed at all (caps,
		// syntax) has no values to check.
		if !readFile(path, r, &p) {
			return nil, p.err()
		}
	}
	applyFlags(flags, r, &p)
	o := validate(r, sys, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	o.Path = path
	o.flags = flags.clone()
	o.autoWorkers = sys.autoWorkers
	return o, nil
}

// applyFlags lays the command-line values over the file's. A repeated
// --listen replaces every listen block; --env overrides the file's
// environment key by key; the command replaces the file's.
func applyFlags(f Flags, r *raw, p *problems) {
	for _, k := range Keys() {
		vals, ok := f.Values[k.Name]
		if !ok {
			continue
		}
		from := origin{flag: true}
		switch k.Name {
		case KeyListen:
			r.listen = nil
			for _, v := range vals {
				lv, ok := listenFlag(v, p)
				if ok {
					r.listen = append(r.listen, lv)
				}
			}
		case KeyEnvironment:
			for _, v := range vals {
				key, val, ok := strings.Cut(v, "=")
				if !ok {
					p.add(from, false, "--env %q: want KEY=VALUE", v)
					continue
				}
				r.env = append(r.env, envValue{key: key, val: val, from: from})
			}
		default:
			if len(vals) > 0 {
				r.scalars[k.Name] = value{raw: vals[len(vals)-1], from: from}
			}
		}
	}
	if len(f.Command) > 0 {
		r.command, r.commandFrom, r.hasCommand = f.Command, origin{flag: true}, true
	}
}

// listenFlag splits NAME=unix:///PATH?mode=0660&owner=U&group=G.
func listenFlag(s string, p *problems) (listenValue, bool) {
	from := origin{flag: true}
	lv := listenValue{from: from, addrFrom: from, flagText: s, opts: map[string]value{}}
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		p.add(from, false, "--listen %q: want NAME=SCHEME://ADDRESS, e.g. http=tcp://127.0.0.1:8080", s)
		return lv, false
	}
	lv.name, lv.address = name, rest
	if addr, query, ok := strings.Cut(rest, "?"); ok {
		lv.address = addr
		if !strings.HasPrefix(rest, "unix://") {
			p.add(from, false, "--listen %q: options after '?' are for unix listeners only", s)
			return lv, false
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			p.add(from, false, "--listen %q: bad options %q: want mode=0660&owner=USER&group=GROUP", s, query)
			return lv, false
		}
		for k, vs := range q {
			switch k {
			case "mode", "owner", "group":
			default:
				p.add(from, false, "--listen %q: unknown option %q (want mode, owner or group)", s, k)
				return lv, false
			}
			if len(vs) != 1 {
				p.add(from, false, "--listen %q: option %q given %d times", s, k, len(vs))
				return lv, false
			}
			lv.opts[k] = value{raw: vs[0], from: from}
		}
	}
	return lv, true
}

// get returns the value of a scalar key: the file's or a flag's, else
// the default (set reports whether there is any).
func (r *raw) get(k Key) (v value, set bool) {
	if v, ok := r.scalars[k.Name]; ok {
		return v, true
	}
	return value{raw: k.Default}, k.Default != ""
}

// validate turns raw settings into Options, recording every problem.
func validate(r *raw, sys *system, p *problems) *Options {
	o := &Options{}
	c := newChecker(r, p)
	readyV, readyTimeoutV := c.workerSettings(o, sys)
	c.steerSettings(o, sys)
	healthV := c.livenessSettings(o)
	c.masterSettings(o)
	o.Environment = validateEnv(r.env, p)
	validateListen(r, sys, o, p)
	validateRunAs(r, c.keys, sys, o, p)

	if p.any() {
		// The checks below combine settings: only for valid ones.
		return o
	}
	return c.combined(o, readyV, readyTimeoutV, healthV)
}

// checker parses the scalar settings of one load, reporting each bad
// value with where it came from (a flag, or the file's line).
type checker struct {
	r    *raw
	p    *problems
	keys map[string]Key
}

func newChecker(r *raw, p *problems) *checker {
	c := &checker{r: r, p: p, keys: map[string]Key{}}
	for _, k := range Keys() {
		c.keys[k.Name] = k
	}
	return c
}

// scalar parses the setting name with parse, if it is set, and reports
// parse's error; it returns the value and where it came from.
func (c *checker) scalar(name string, parse func(string) error) value {
	k := c.keys[name]
	v, set := c.r.get(k)
	if set {
		if err := parse(v.raw); err != nil {
			c.p.add(v.from, false, "%s: %v", v.from.describe(k, v.raw), err)
		}
	}
	return v
}

// workerSettings are how many workers run and how they start, become
// ready, are replaced and stop.
func (c *checker) workerSettings(o *Options, sys *system) (readyV, readyTimeoutV value) {
	var err error
	c.scalar(KeyWorkers, func(s string) error {
		o.Workers, o.WorkersAuto, err = parseWorkers(s, sys.autoWorkers)
		return err
	})
	readyV = c.scalar(KeyReady, func(s string) error {
		o.Ready, err = ParseReady(s)
		return err
	})
	readyTimeoutV = c.scalar(KeyReadyTimeout, func(s string) (err error) {
		o.ReadyTimeout, err = parseDuration(s, false)
		return err
	})
	c.scalar(KeyDrainTimeout, func(s string) (err error) {
		o.DrainTimeout, err = parseDuration(s, false)
		return err
	})
	c.scalar(KeyMinUptime, func(s string) (err error) {
		o.MinUptime, err = parseDuration(s, true)
		return err
	})
	c.scalar(KeyRetireParallel, func(s string) (err error) {
		o.RetireParallel, err = parseCount(s)
		return err
	})
	c.scalar(KeyStopSignal, func(s string) (err error) {
		o.StopSignal, err = ParseSignal(s)
		return err
	})
	c.scalar(KeyReloadStrategy, func(s string) error {
		o.Strategy = workers.Strategy(s)
		return parseChoice(s, string(workers.Surge), string(workers.Rolling))
	})
	c.scalar(KeyMaxMemory, func(s string) (err error) {
		o.MaxMemory, err = ParseSize(s)
		return err
	})
	c.scalar(KeyStartAttempts, func(s string) (err error) {
		if s == "0" {
			o.StartAttempts = 0
			return nil
		}
		o.StartAttempts, err = parseCount(s)
		return err
	})
	return readyV, readyTimeoutV
}

// steerSettings are how connections reach workers and where their
// output goes.
func (c *checker) steerSettings(o *Options, sys *system) {
	c.scalar(KeyBalance, func(s string) error {
		o.Balance = Balance(s)
		return parseChoice(s, string(BalanceSteer), string(BalanceSticky), string(BalanceShared))
	})
	c.scalar(KeySteerBPF, func(s string) error {
		o.SteerBPF = s
		return parseChoice(s, "auto", "ebpf", "cbpf")
	})
	c.scalar(KeyWorkerOutput, func(s string) error {
		o.WorkerOutput = WorkerOutput(s)
		if s == "auto" {
			o.WorkerOutput = OutputPrefix
			if sys.journal {
				o.WorkerOutput = OutputInherit
			}
		}
		return parseChoice(s, "auto", string(OutputInherit), string(OutputPrefix), string(OutputJSON))
	})
}

// livenessSettings are how hung and unhealthy workers are found.
func (c *checker) livenessSettings(o *Options) (healthV value) {
	c.scalar(KeyHangTimeout, func(s string) (err error) {
		o.HangTimeout, err = parseDuration(s, true)
		return err
	})
	c.scalar(KeyWatchdog, func(s string) (err error) {
		o.Watchdog, err = parseDuration(s, true)
		return err
	})
	healthV = c.scalar(KeyHealth, func(s string) (err error) {
		o.Health, err = ParseHealth(s)
		return err
	})
	c.scalar(KeyHealthInterval, func(s string) (err error) {
		o.HealthInterval, err = parseDuration(s, false)
		return err
	})
	c.scalar(KeyHealthFailures, func(s string) (err error) {
		o.HealthFailures, err = parseCount(s)
		return err
	})
	return healthV
}

// masterSettings are the master's own: its endpoints, pid file and log.
func (c *checker) masterSettings(o *Options) {
	c.scalar(KeyAdmin, func(s string) error {
		o.Admin = s
		return ParseAdmin(s)
	})
	c.scalar(KeyControl, func(s string) error {
		o.Control = s
		if s == "" {
			return nil // the default
		}
		return control.CheckPath(s)
	})
	c.scalar(KeyPIDFile, func(s string) error {
		o.PIDFile = s
		return nil
	})
	c.scalar(KeyLogFormat, func(s string) error {
		o.LogFormat = s
		return parseChoice(s, "text", "json")
	})
	c.scalar(KeyLogLevel, func(s string) error {
		o.LogLevel = s
		return parseLogLevel(s)
	})
}

// combined checks what combines settings, valid each on its own, and
// takes the command.
func (c *checker) combined(o *Options, readyV, readyTimeoutV, healthV value) *Options {
	r, p, keys := c.r, c.p, c.keys
	if o.Ready.Mode == ReadyDelay && o.Ready.Delay >= o.ReadyTimeout {
		from := readyV.from
		if from.pos == nil {
			from = readyTimeoutV.from
		}
		p.add(from, false, "%s must be shorter than %s", readyV.from.describe(keys[KeyReady], readyV.raw), readyTimeoutV.from.describe(keys[KeyReadyTimeout], readyTimeoutV.raw))
	}
	if o.Ready.Mode == ReadyTCP || o.Ready.Mode == ReadyHTTP {
		stream := false
		for _, l := range o.Listen {
			stream = stream || l.Network != "udp"
		}
		if !stream {
			p.add(readyV.from, false, "%s needs a tcp or unix listener to probe", readyV.from.describe(keys[KeyReady], readyV.raw))
		}
	}
	if o.Health.Mode != "" && (len(o.Listen) == 0 || o.Balance == BalanceShared) {
		p.add(healthV.from, false, "%s needs a tcp listener with --balance steer or sticky: a check reaches one worker only through its own socket", healthV.from.describe(keys[KeyHealth], healthV.raw))
	}
	if len(o.Listen) == 0 {
		o.Warnings = append(o.Warnings, "no listen sockets configured: workers get no sockets (LISTEN_FDS=0)")
	}
	if !r.hasCommand || len(r.command) == 0 || r.command[0] == "" {
		what := "no command given (usage: handoff run [flags] -- COMMAND [ARGS...])"
		if r.commandFrom.pos != nil {
			what = "command is empty"
		}
		p.add(r.commandFrom, false, "%s", what)
		return o
	}
	o.Command = slices.Clone(r.command)
	if _, err := workers.ResolveCommand(o.Command[0]); err != nil {
		p.add(r.commandFrom, true, "%v", err)
	}
	return o
}

func validateEnv(env []envValue, p *problems) []string {
	byKey := map[string]string{}
	for _, e := range env {
		if err := checkEnvKey(e.key); err != nil {
			if e.from.pos != nil {
				p.add(e.from, false, "environment %q: %v", e.key, err)
			} else {
				p.add(e.from, false, "--env %q: %v", e.key+"="+e.val, err)
			}
			continue
		}
		if strings.IndexByte(e.val, 0) >= 0 {
			p.add(e.from, false, "environment %s: the value contains a NUL byte", e.key)
			continue
		}
		byKey[e.key] = e.val // later ones (flags) win
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+byKey[k])
	}
	return out
}

func validateListen(r *raw, sys *system, o *Options, p *problems) {
	seen := map[string]bool{}
	var bound []boundAddr // the addresses so far, to find one given twice
	for _, lv := range r.listen {
		// label names the listener in messages.
		label := fmt.Sprintf("listen %q", lv.name)
		if lv.from.flag {
			label = fmt.Sprintf("--listen %q", lv.flagText)
		}
		specText := lv.name + "=" + lv.address
		spec, err := upgrade.ParseSpec(specText)
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("listen %q: ", specText))
			from := lv.addrFrom
			if strings.HasPrefix(msg, "name ") || strings.HasPrefix(msg, "empty name") {
				from = lv.from
			}
			p.add(from, false, "%s: %s", label, msg)
			continue
		}
		if seen[spec.Name] {
			p.add(lv.from, false, "%s: name %q used twice", label, spec.Name)
			continue
		}
		seen[spec.Name] = true
		if b, ok := addrKey(spec); ok {
			if prev, dup := overlapping(bound, b); dup {
				p.add(lv.addrFrom, false, "%s: address %s is also listener %q's (%s): one address, one listener", label, spec.Address, prev.name, prev.address)
				continue
			}
			b.name, b.address = spec.Name, spec.Address
			bound = append(bound, b)
		}
		l := Listen{Spec: spec, UID: -1, GID: -1}
		ok := true
		for _, opt := range []string{"mode", "owner", "group"} {
			v, set := lv.opts[opt]
			if !set {
				continue
			}
			optLabel := label + ": " + opt + " " + strconv.Quote(v.raw)
			if v.from.pos != nil {
				optLabel = fmt.Sprintf("%s: %s = %s", label, opt, v.from.lit)
			}
			if spec.Network != "unix" {
				p.add(v.from, false, "%s: %s is for unix listeners only", label, opt)
				ok = false
				continue
			}
			if strings.HasPrefix(spec.Address, "@") {
				p.add(v.from, false, "%s: an abstract unix socket has no %s", label, opt)
				ok = false
				continue
			}
			switch opt {
			case "mode":
				m, err := parseMode(v.raw)
				if err != nil {
					p.add(v.from, false, "%s: %v", optLabel, err)
					ok = false
				}
				l.Mode, l.HasMode = os.FileMode(m), true
			case "owner":
				uid, _, err := lookupUser(v.raw)
				if err == nil && sys.euid != 0 && uid != sys.euid {
					err = fmt.Errorf("needs root (handoff runs as uid %d)", sys.euid)
				}
				if err != nil {
					p.add(v.from, true, "%s: %v", optLabel, err)
					ok = false
				}
				l.Owner, l.UID = v.raw, uid
			case "group":
				gid, err := lookupGroup(v.raw)
				if err == nil && sys.euid != 0 && gid != sys.egid && !slices.Contains(sys.groups, gid) {
					err = fmt.Errorf("needs root (handoff is not in group %d)", gid)
				}
				if err != nil {
					p.add(v.from, true, "%s: %v", optLabel, err)
					ok = false
				}
				l.Group, l.GID = v.raw, gid
			}
		}
		if ok {
			o.Listen = append(o.Listen, l)
		}
	}
}

// boundAddr is where a listener binds, reduced to what decides whether
// two listeners would collide: the transport (TCP or UDP, "unix" for a
// path), the host as an IP (nil for a wildcard or a name) and the port.
type boundAddr struct {
	proto   string
	host    string // literal host, normalized; "" for the wildcard
	family  string // "4", "6", or "" for either (a dual-stack wildcard, a name)
	port    string
	name    string // the listener's name, for the message
	address string // as given
}

// addrKey is where spec binds; false for an address that cannot collide
// with another (port 0 picks a free port each time).
func addrKey(spec upgrade.Spec) (boundAddr, bool) {
	switch spec.Network {
	case "unix":
		return boundAddr{proto: "unix", host: spec.Address}, true
	case "tcp", "tcp4", "tcp6", "udp":
	default:
		return boundAddr{}, false
	}
	host, port, err := net.SplitHostPort(spec.Address)
	if err != nil {
		return boundAddr{}, false
	}
	proto := "tcp"
	if spec.Network == "udp" {
		proto = "udp"
	}
	if n, err := net.LookupPort(proto, port); err == nil {
		if n == 0 {
			return boundAddr{}, false
		}
		port = strconv.Itoa(n)
	}
	b := boundAddr{proto: proto, host: strings.ToLower(host), port: port}
	switch spec.Network {
	case "tcp4":
		b.family = "4"
	case "tcp6":
		b.family = "6"
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.To4() != nil {
			b.family = "4"
		} else {
			b.family = "6"
		}
		if ip.IsUnspecified() {
			b.host = ""
		} else {
			b.host = ip.String()
		}
	}
	return b, true
}

// overlapping finds an address in seen that b collides with: the same
// path, or the same transport and port on the same host or where either
// is a wildcard (0.0.0.0 and 127.0.0.1 share a port, and the kernel would
// let our own SO_REUSEPORT groups on both split the traffic).
func overlapping(seen []boundAddr, b boundAddr) (boundAddr, bool) {
	for _, s := range seen {
		if s.proto != b.proto || s.port != b.port {
			continue
		}
		if s.host == b.host && s.family == b.family {
			return s, true
		}
		sameFamily := s.family == "" || b.family == "" || s.family == b.family
		if s.proto != "unix" && sameFamily && (s.host == "" || b.host == "") {
			return s, true
		}
	}
	return boundAddr{}, false
}

// validateRunAs resolves user and group.
func validateRunAs(r *raw, keys map[string]Key, sys *system, o *Options, p *problems) {
	uv, hasUser := r.get(keys[KeyUser])
	gv, hasGroup := r.get(keys[KeyGroup])
	if !hasUser && !hasGroup {
		return
	}
	ra := &RunAs{UID: uint32(sys.euid), GID: uint32(sys.egid)}
	ok := true
	if hasUser {
		uid, u, err := lookupUser(uv.raw)
		if err == nil && u == nil && !hasGroup {
			err = fmt.Errorf("uid %s has no entry in the user database to take a group from: set the group too", uv.raw)
		}
		if err == nil && sys.euid != 0 && uid != sys.euid {
			err = fmt.Errorf("needs root (handoff runs as uid %d)", sys.euid)
		}
		if err != nil {
			p.add(uv.from, true, "%s: %v", uv.from.describe(keys[KeyUser], uv.raw), err)
			ok = false
		} else {
			ra.User, ra.UID = uv.raw, uint32(uid)
			if u != nil {
				if gid, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
					ra.GID = uint32(gid)
				}
				if ids, err := u.GroupIds(); err == nil {
					for _, s := range ids {
						if g, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(g) != ra.GID {
							ra.Groups = append(ra.Groups, uint32(g))
						}
					}
				}
			}
		}
	}
	if hasGroup {
		gid, err := lookupGroup(gv.raw)
		if err == nil && sys.euid != 0 && gid != sys.egid && !slices.Contains(sys.groups, gid) {
			err = fmt.Errorf("needs root (handoff is not in group %d)", gid)
		}
		if err != nil {
			p.add(gv.from, true, "%s: %v", gv.from.describe(keys[KeyGroup], gv.raw), err)
			ok = false
		} else {
			ra.Group, ra.GID = gv.raw, uint32(gid)
		}
	}
	if ok {
		o.RunAs = ra
	}
}

// lookupUser resolves a user name or uid. A number with no entry in the
// user database is taken as is (u is then nil).
func lookupUser(s string) (uid int, u *user.User, err error) {
	if n, perr := strconv.ParseUint(s, 10, 32); perr == nil {
		u, err := user.LookupId(s)
		if err != nil {
			return int(n), nil, nil
		}
		return int(n), u, nil
	}
	u, err = user.Lookup(s)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return 0, nil, fmt.Errorf("no such user")
		}
		return 0, nil, fmt.Errorf("look up user: %w", err)
	}
	n, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, nil, fmt.Errorf("user %s has a non-numeric uid %q", s, u.Uid)
	}
	return n, u, nil
}

// lookupGroup resolves a group name or gid; a number with no entry in
// the group database is taken as is.
func lookupGroup(s string) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, fmt.Errorf("no such group")
		}
		return 0, fmt.Errorf("look up group: %w", err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %s has a non-numeric gid %q", s, g.Gid)
	}
	return n, nil
}
