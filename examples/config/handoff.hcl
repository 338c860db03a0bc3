# handoff run --config /etc/handoff/app.hcl
#
# Every setting of 'handoff run', one key per flag (--ready-timeout is
# ready_timeout). A flag given on the command line overrides the key here.
# Check a file with: handoff check --config FILE
#
# SIGHUP or 'handoff reload' re-reads this file and starts a new generation
# with it. A file with a mistake rejects the reload (the running one stays).
# user, group, steer_bpf, admin, control, pid_file, log_format and log_level
# keep their running values until handoff restarts (the reload logs a
# warning); every other key applies to the new generation.

# The worker's command and arguments. Resolved through PATH and symlinks
# again at every reload. On the command line: handoff run -- COMMAND ARGS...
command = ["/opt/app/bin/server", "--port-from-fd"]

# Added to the workers' environment (handoff's own variables, LISTEN_*,
# NOTIFY_SOCKET, HANDOFF_*, cannot be set). Flag: --env KEY=VALUE.
environment = {
  APP_ENV = "production"
  GOMEMLIMIT = "450MiB"
}

# Workers per generation, 1 to 1024, or "auto": GOMAXPROCS, which follows
# the CPU quota of a container.
workers = 4

# Listening sockets, passed to every worker as fds 3, 4, ... in this order
# and named in LISTEN_FDNAMES. Schemes: tcp, tcp4, tcp6, udp, unix. Port 0
# picks a free port. Flag: --listen http=tcp://0.0.0.0:8080 (any --listen
# replaces all the blocks here).
listen "http" {
  address = "tcp://0.0.0.0:8080"
}

# A unix socket may also get a mode and an owner and group (applied after
# bind; chown needs root). Flag form:
# --listen api=unix:///run/app/api.sock?mode=0660&owner=www-data&group=www-data
listen "api" {
  address = "unix:///run/app/api.sock"
  mode    = "0660"
  owner   = "www-data"
  group   = "www-data"
}

# When a worker is ready: "notify" (it sends READY=1 on NOTIFY_SOCKET),
# "delay=2s" (alive that long), "tcp" (it accepts a connection on its own
# socket) or "http=/healthz" (it answers 2xx or 3xx on that path). With
# tcp and http the master probes each worker through its own steered
# socket (balance steer or sticky), and READY=1 does not count.
ready = "notify"

# A worker not ready within this is killed, and a reload that waits for it
# fails and is rolled back.
ready_timeout = "60s"

# After the stop signal, how long a worker may take to exit before SIGKILL.
drain_timeout = "30s"

# How long a worker must stay up after READY: a reload's probation, and the
# line between a crash loop (backoff) and a worker replaced at once.
# "0" disables probation.
min_uptime = "1s"

# How many old workers a reload retires at once.
retire_parallel = 1

# The signal that asks a worker to drain and exit.
stop_signal = "SIGTERM"

# "surge" starts every new worker at once (2N processes for a moment);
# "rolling" replaces one worker at a time (at most N+1).
reload_strategy = "surge"

# How connections spread over workers: "steer" (each worker has a socket
# of its own; the kernel deals new connections round-robin with eBPF, by
# flow hash with classic BPF, to ready workers only, and a worker is
# stopped only once its socket's queue is empty), "sticky" (as steer, by
# client address: a client keeps its worker), "shared" (one socket,
# whichever worker accepts first). Changes at a restart only.
balance = "steer"

# How the kernel is told where connections go: "auto" (eBPF where allowed:
# root, or CAP_BPF and CAP_NET_ADMIN; else classic BPF), "ebpf" or "cbpf".
steer_bpf = "auto"

# Run the workers as this user and group (a name or a number; needs root).
# Without group, the user's own group and supplementary groups.
user  = "www-data"
group = "www-data"

# The workers' stdout and stderr: "inherit" (the master's, as is), "prefix"
# (each line after its worker's slot and generation: "[slot 1 gen 4] ") or
# "json" (one JSON object a line). Unset: inherit when stderr is the
# journal, else prefix.
worker_output = "prefix"

# Replace a worker gracefully once its memory use exceeds this: 512MiB,
# 1GiB, 800MB (K, M, G alone are 1024-based, as in systemd). "0" is off.
max_memory = "512MiB"

# Outside systemd, give up (exit 1, with the reason) when every slot of the
# first generation has failed to start this many times in a row and no
# worker was ever ready. "0" keeps trying. Under systemd, handoff keeps
# trying and TimeoutStartSec= decides.
start_attempts = 5

# Liveness. A ready worker whose accept queue does not move gets no new
# connections at once, and is replaced (its tree killed; the replacement
# takes the connections still queued) once the queue has not moved for
# hang_timeout. "0" only steers away. Raise it for apps that serve long
# synchronous requests one at a time.
hang_timeout = "5s"

# Like systemd's WatchdogSec=: workers get WATCHDOG_USEC and must send
# WATCHDOG=1 that often after READY=1 (sd_notify), or are replaced. "0" is
# off.
watchdog = "0"

# Check every ready worker through its own socket: "tcp" or "http=/PATH"
# (2xx or 3xx is healthy). The first failure steers connections away,
# health_failures in a row replace the worker, a success steers them back.
health          = "http=/healthz"
health_interval = "1s"
health_failures = 3

# Health, readiness and metrics over HTTP on this address. Off when unset.
admin = "127.0.0.1:9100"

# The control socket for 'handoff status', 'reload', 'stop' and 'scale'.
# Unset: $RUNTIME_DIRECTORY/handoff.sock under systemd, else
# $XDG_RUNTIME_DIR/handoff.sock, else /run/handoff/handoff.sock for root.
control = "/run/handoff/handoff.sock"

# Written with the master's pid once it serves (for PIDFile=), rewritten by
# a new master after a self-upgrade, removed on a clean stop.
pid_file = "/run/handoff.pid"

# The master's log on stderr: "text" or "json"; level trace, debug, info,
# warn or error.
log_format = "text"
log_level  = "info"
