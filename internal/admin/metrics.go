package admin

import (
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/handoff-dev/handoff/workers"
)

const ns = "handoff"

// Label values that always exist, so that rate() and increase() see a
// series from the start rather than from its first increment.
var (
	restartReasons = []string{"failed", "killed", "exited", "memory"}
	reloadResults  = []string{"ok", "failed", "master_ok", "master_failed"}
	masterPhases   = []workers.MasterPhase{workers.MasterStarting, workers.MasterServing, workers.MasterUpgrading, workers.MasterHandedOver, workers.MasterStopping}
	controlCmds    = []string{"status", "reload", "stop"}
)

// reloadBuckets span a reload's durations: from a fast app's fraction
// of a second to slow starts and long drains.
var reloadBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// eventMetrics are the metrics fed by events, not by status snapshots.
type eventMetrics struct {
	reloadDuration *prometheus.HistogramVec
	timeToServing  *prometheus.HistogramVec
	controlReqs    *prometheus.CounterVec
}

func newEventMetrics() *eventMetrics {
	m := &eventMetrics{
		reloadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "reload_duration_seconds",
			Help:    "Time from a reload's request until it was over: the old generation gone, or the reload rolled back. By result: ok, failed (rolled back), master_ok, master_failed (master self-upgrades).",
			Buckets: reloadBuckets,
		}, []string{"result"}),
		timeToServing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "reload_time_to_serving_seconds",
			Help:    "Time from a successful reload's request until its new generation served (ready, and through its probation). By result: ok, master_ok.",
			Buckets: reloadBuckets,
		}, []string{"result"}),
		controlReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "control_requests_total",
			Help: "Requests answered on the control socket, by command (status, reload, stop, other) and result (ok, error).",
		}, []string{"command", "result"}),
	}
	for _, r := range reloadResults {
		m.reloadDuration.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "master_ok"} {
		m.timeToServing.WithLabelValues(r)
	}
	for _, c := range controlCmds {
		m.controlReqs.WithLabelValues(c, "ok")
		m.controlReqs.WithLabelValues(c, "error")
	}
	return m
}

// counterFuncs are the counters the endpoint reads from elsewhere when
// scraped: its own evictions, and the log lines dropped if
// Options.LogLinesDropped says.
func (s *Server) counterFuncs() []prometheus.Collector {
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "admin_connections_evicted_total",
			Help: "Idle connections to the admin endpoint closed to make room for a new one at its connection cap.",
		}, func() float64 { return float64(s.ln.evicted()) }),
	}
	if f := s.opts.LogLinesDropped; f != nil {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Name: "log_lines_dropped_total",
			Help: "Lines of the master's log dropped while its log output failed (a closed pipe, a stream that would block).",
		}, func() float64 { return float64(f()) }))
	}
	return cs
}

// reloadResult is the result label of a reload, as Status counts it.
func reloadResult(r workers.ReloadResult) string {
	key := "failed"
	if r.OK {
		key = "ok"
	}
	if r.Master {
		key = "master_" + key
	}
	return key
}

func (m *eventMetrics) reloaded(r workers.ReloadResult) {
	key := reloadResult(r)
	m.reloadDuration.WithLabelValues(key).Observe(r.Duration.Seconds())
	if r.OK {
		m.timeToServing.WithLabelValues(key).Observe(r.Serving.Seconds())
	}
}

func (m *eventMetrics) control(cmd string, ok bool) {
	known := false
	for _, c := range controlCmds {
		known = known || c == cmd
	}
	if !known {
		// Commands come from clients: keep the label set bounded.
		cmd = "other"
	}
	result := "error"
	if ok {
		result = "ok"
	}
	m.controlReqs.WithLabelValues(cmd, result).Inc()
}

func (m *eventMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.reloadDuration.Describe(ch)
	m.timeToServing.Describe(ch)
	m.controlReqs.Describe(ch)
}

func (m *eventMetrics) Collect(ch chan<- prometheus.Metric) {
	m.reloadDuration.Collect(ch)
	m.timeToServing.Collect(ch)
	m.controlReqs.Collect(ch)
}

// statusCollector turns one status snapshot per scrape into constant
// metrics.
type statusCollector struct {
	s *Server

	masterInfo, masterPhase, ready                    *prometheus.Desc
	servingGen, reloadingGen, reloadPending, genPhase *prometheus.Desc
	workersByState, workerInfo, workerRSS, workerCPU  *prometheus.Desc
	workerAway                                        *prometheus.Desc
	slotLastExit                                      *prometheus.Desc
	restarts, reloads, rollbacks                      *prometheus.Desc
	lastOK, lastGen, lastStart                        *prometheus.Desc
	listenerInfo, queueConns, queueBytes              *prometheus.Desc
	listenerForeign                                   *prometheus.Desc
}

func newStatusCollector(s *Server) *statusCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
	}
	queueLabels := []string{"listener", "balance", "slot", "bank"}
	return &statusCollector{
		s:             s,
		masterInfo:    d("master_info", "The master process: its pid and handoff's version. Always 1.", "pid", "version"),
		masterPhase:   d("master_phase", "The master's phase: 1 for the current one (starting, serving, upgrading, handed over, stopping), 0 for the others.", "phase"),
		ready:         d("ready", "1 while /readyz answers 200: a generation serves, at least one worker is ready, and the master is neither stopping nor handed over.", nil...),
		servingGen:    d("serving_generation", "The generation that serves; 0 before the first one does.", nil...),
		reloadingGen:  d("reloading_generation", "The generation a reload under way rolls out; 0 when none runs.", nil...),
		reloadPending: d("reload_pending", "1 when a reload was asked for and waits for the one under way.", nil...),
		genPhase:      d("generation_phase", "Each live generation, with its phase (starting, probation, serving, retiring). Always 1.", "generation", "phase"),
		workersByState: d("workers", "Workers by state (starting, ready, draining, exited, backoff: a slot waiting to restart) and generation.",
			"state", "generation"),
		workerInfo:   d("worker_info", "Each worker process (and each slot in backoff, with pid 0), with its state. Always 1.", "slot", "generation", "pid", "state"),
		slotLastExit: d("slot_last_exit", "1 for each slot of the serving generation whose last worker ended without being stopped on purpose, by its kind (as restarts_total's reason); status --json has the whole reason and the worker's last stderr lines.", "slot", "generation", "reason"),
		workerAway:   d("worker_away", "1 for a ready worker that gets no new connections, by the rule that steered it away: queue (its accept queue does not move), health, or hung, watchdog, unhealthy while it is replaced.", "slot", "generation", "pid", "rule"),
		workerRSS:    d("worker_resident_memory_bytes", "Resident memory of a worker's whole process tree, as last sampled.", "slot", "generation", "pid"),
		workerCPU:    d("worker_cpu_seconds_total", "CPU time of a worker's whole process tree, as last sampled.", "slot", "generation", "pid"),
		restarts: d("worker_restarts_total", "Workers replaced since the master started, by reason: failed (exited before ready or within the minimum uptime: backed off), killed (killed from outside after ready), exited (exited on its own after the minimum uptime), memory (recycled above --max-memory), hung (its queue did not move for --hang-timeout), watchdog (no WATCHDOG=1 in time), unhealthy (--health failed).",
			"reason"),
		reloads:         d("reloads_total", "Reloads since the master started, by result: ok, failed (rolled back), master_ok, master_failed (master self-upgrades).", "result"),
		rollbacks:       d("rollbacks_total", "Failed reloads since the master started, the previous generation (kind=workers) or master (kind=master) serving on.", "kind"),
		lastOK:          d("last_reload_success", "1 if the last reload succeeded, 0 if it failed; absent before the first reload.", nil...),
		lastGen:         d("last_reload_generation", "The generation the last reload rolled out (or tried to).", nil...),
		lastStart:       d("last_reload_start_time_seconds", "When the last reload was asked for, in seconds since the Unix epoch.", nil...),
		listenerForeign: d("listener_foreign_sockets", "Sockets on a steered listener's address that are not the master's: connections the kernel gives them reach no worker of handoff's.", "listener"),
		listenerInfo:    d("listener_info", "Each listener: its network, address, balance (steer, sticky: a socket per worker slot; shared: one socket), mechanism and selection. Always 1.", "listener", "network", "addr", "balance", "mechanism", "selection"),
		queueConns: d("listener_queue_connections", "Connections waiting in a stream socket's accept queue. A steered listener has a socket per slot and bank (labels slot, bank); a shared listener one socket (slot and bank empty).",
			queueLabels...),
		queueBytes: d("listener_queue_bytes", "Receive memory taken by datagrams waiting on a UDP socket (zero exactly when none waits). Labels as for handoff_listener_queue_connections.",
			queueLabels...),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.masterInfo, c.masterPhase, c.ready, c.servingGen, c.reloadingGen, c.reloadPending, c.genPhase,
		c.workersByState, c.workerInfo, c.workerRSS, c.workerCPU, c.workerAway, c.slotLastExit, c.restarts, c.reloads, c.rollbacks,
		c.lastOK, c.lastGen, c.lastStart, c.listenerInfo, c.listenerForeign, c.queueConns, c.queueBytes,
	} {
		ch <- d
	}
}

// emitter sends constant metrics, at most one per name and label
// values: a duplicate would fail the whole scrape.
type emitter struct {
	ch   chan<- prometheus.Metric
	seen map[string]bool
}

func (e *emitter) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	key := d.String() + "\xff" + strings.Join(labels, "\xff")
	if e.seen[key] {
		return
	}
	e.seen[key] = true
	e.ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
}

func itoa(n int) string { return strconv.Itoa(n) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect reads one status snapshot and emits every series of it: the
// master's, the workers' and queues', and the counters.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.snapshot(c.s.opts.StatusTimeout)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.servingGen, err)
		return
	}
	e := &emitter{ch: ch, seen: map[string]bool{}}
	c.collectMaster(e, st)
	c.collectWorkers(e, st)
	c.collectCounters(e, st)
}

// collectMaster emits the master's series: its phase, readiness and
// generations.
func (c *statusCollector) collectMaster(e *emitter, st workers.Status) {
	G := prometheus.GaugeValue
	e.emit(c.masterInfo, G, 1, itoa(st.PID), c.s.opts.Version)
	known := false
	for _, p := range masterPhases {
		known = known || p == st.Phase
		e.emit(c.masterPhase, G, b2f(p == st.Phase), string(p))
	}
	if !known && st.Phase != "" {
		e.emit(c.masterPhase, G, 1, string(st.Phase))
	}
	ok, _ := c.s.ready()
	e.emit(c.ready, G, b2f(ok))
	serving := 0
	if st.Serving {
		serving = st.Generation
	}
	e.emit(c.servingGen, G, float64(serving))
	e.emit(c.reloadingGen, G, float64(st.Reloading))
	e.emit(c.reloadPending, G, b2f(st.ReloadPending))

	for _, g := range st.Generations {
		e.emit(c.genPhase, G, 1, itoa(g.Generation), string(g.Phase))
	}
}

// collectWorkers emits the workers' series, the listeners' and every
// socket's queue.
func (c *statusCollector) collectWorkers(e *emitter, st workers.Status) {
	G, C := prometheus.GaugeValue, prometheus.CounterValue
	type stateGen struct {
		state workers.State
		gen   int
	}
	counts := map[stateGen]int{}
	var keys []stateGen
	for _, w := range st.Workers {
		k := stateGen{w.State, w.Generation}
		if _, ok := counts[k]; !ok {
			keys = append(keys, k)
		}
		counts[k]++
	}
	for _, k := range keys {
		e.emit(c.workersByState, G, float64(counts[k]), string(k.state), itoa(k.gen))
	}

	netOf := map[string]string{}
	for _, l := range st.Listeners {
		netOf[l.Name] = l.Network
		e.emit(c.listenerInfo, G, 1, l.Name, l.Network, l.Addr, l.Balance, l.Mechanism, l.Selection)
		if l.Mechanism != "" {
			e.emit(c.listenerForeign, G, float64(l.Foreign), l.Name)
		}
	}
	queue := func(listener, balance, slot, bank string, n int) {
		d := c.queueConns
		if strings.HasPrefix(netOf[listener], "udp") {
			d = c.queueBytes
		}
		e.emit(d, G, float64(n), listener, balance, slot, bank)
	}
	balanceOf := map[string]string{}
	for _, l := range st.Listeners {
		balanceOf[l.Name] = l.Balance
	}

	for _, w := range st.Workers {
		slot, gen, pid := itoa(w.Slot), itoa(w.Generation), itoa(w.PID)
		e.emit(c.workerInfo, G, 1, slot, gen, pid, string(w.State))
		if w.Away != "" {
			e.emit(c.workerAway, G, 1, slot, gen, pid, w.AwayFor)
		}
		if w.LastExitKind != "" {
			e.emit(c.slotLastExit, G, 1, slot, gen, w.LastExitKind)
		}
		if w.PID != 0 && (w.RSS != 0 || w.CPU != 0) {
			// As status --json: absent until sampled.
			e.emit(c.workerRSS, G, float64(w.RSS), slot, gen, pid)
			e.emit(c.workerCPU, C, w.CPU, slot, gen, pid)
		}
		names := make([]string, 0, len(w.Queue))
		for name := range w.Queue {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			// A slot's draining and current workers of one generation
			// share its socket: the first one counts.
			queue(name, balanceOf[name], slot, itoa(w.Bank), w.Queue[name])
		}
	}
	for _, l := range st.Listeners {
		fd, ok := c.s.opts.SharedSockets[l.Name]
		if !ok || l.Balance != "shared" {
			continue
		}
		if n, err := socketQueue(fd); err == nil {
			queue(l.Name, l.Balance, "", "", n)
		}
	}
}

// collectCounters emits restarts, reloads and rollbacks by reason, and
// the last reload.
func (c *statusCollector) collectCounters(e *emitter, st workers.Status) {
	G, C := prometheus.GaugeValue, prometheus.CounterValue
	for _, r := range restartReasons {
		e.emit(c.restarts, C, float64(st.Counters.Restarts[r]), r)
	}
	for _, r := range sortedKeys(st.Counters.Restarts) {
		e.emit(c.restarts, C, float64(st.Counters.Restarts[r]), r)
	}
	for _, r := range reloadResults {
		e.emit(c.reloads, C, float64(st.Counters.Reloads[r]), r)
	}
	for _, r := range sortedKeys(st.Counters.Reloads) {
		e.emit(c.reloads, C, float64(st.Counters.Reloads[r]), r)
	}
	e.emit(c.rollbacks, C, float64(st.Counters.Reloads["failed"]), "workers")
	e.emit(c.rollbacks, C, float64(st.Counters.Reloads["master_failed"]), "master")

	if r := st.LastReload; r != nil {
		e.emit(c.lastOK, G, b2f(r.OK))
		e.emit(c.lastGen, G, float64(r.Generation))
		if !r.Started.IsZero() {
			e.emit(c.lastStart, G, float64(r.Started.UnixNano())/1e9)
		}
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
