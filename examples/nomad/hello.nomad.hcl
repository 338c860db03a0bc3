# hello served by handoff, as a Nomad job (docker driver, image from the
# repository's Dockerfile).
#
# Two layers roll things out:
# - Nomad rolls allocations: a new image (or any change to this file)
#   replaces allocations one at a time (update block), each new one
#   counting as healthy once its /readyz check passes.
# - handoff rolls processes inside one allocation: when the rendered
#   config changes (here: the Nomad variable nomad/jobs/hello), Nomad
#   rewrites local/handoff.hcl and sends SIGHUP, and handoff starts a new
#   generation with it on the same sockets; the allocation stays healthy,
#   and a generation that fails is rolled back inside it.
#
#   nomad job run examples/nomad/hello.nomad.hcl
#   nomad var put nomad/jobs/hello workers=4     # in-place, every allocation
job "hello" {
  type        = "service"
  datacenters = ["*"]

  update {
    max_parallel     = 1
    min_healthy_time = "5s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "hello" {
    count = 3

    network {
      port "http" {
        to = 8080
      }
      port "admin" {
        to = 9100
      }
    }

    service {
      name     = "hello"
      provider = "nomad"
      port     = "http"

      # 200 while a generation serves (also during a reload); 503 from the
      # moment a stop begins.
      check {
        name     = "ready"
        type     = "http"
        port     = "admin"
        path     = "/readyz"
        interval = "2s"
        timeout  = "1s"
      }
    }

    task "hello" {
      driver = "docker"

      # Stopping an allocation: deregister the service, wait
      # shutdown_delay while that reaches every consumer, send
      # kill_signal, wait up to kill_timeout, then SIGKILL.
      # kill_timeout >= drain_timeout (25s, in the config below) + 5s for
      # the master to exit. Nomad caps kill_timeout at the client's
      # max_kill_timeout (30s by default): raise that for longer drains.
      shutdown_delay = "5s"
      kill_signal    = "SIGTERM"
      kill_timeout   = "30s"

      config {
        image = "registry.example.com/handoff-hello:0.1.0"
        ports = ["http", "admin"]
        # The image's ENTRYPOINT is 'handoff run'; these replace its CMD.
        args = ["--config", "${NOMAD_TASK_DIR}/handoff.hcl"]
      }

      # The handoff config file. On a change of what it renders from,
      # Nomad rewrites the file and signals the task instead of
      # restarting it: SIGHUP is handoff's reload.
      template {
        destination   = "local/handoff.hcl"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          # Rendered by Nomad from examples/nomad/hello.nomad.hcl.
          listen "http" {
            address = "tcp://0.0.0.0:8080"
          }
          admin = "0.0.0.0:9100"
          {{- $workers := "auto" }}
          {{- if nomadVarExists "nomad/jobs/hello" }}{{ with nomadVar "nomad/jobs/hello" }}{{ if .workers }}{{ $workers = .workers }}{{ end }}{{ end }}{{ end }}
          workers       = "{{ $workers }}"
          ready_timeout = "60s"
          min_uptime    = "1s"
          drain_timeout = "25s"
          stop_signal   = "SIGTERM"
          command       = ["/usr/local/bin/hello", "-drain", "20s"]
        EOT
      }

      resources {
        # 2 CPUs: workers = "auto" follows the container's CPU limit.
        cores  = 2
        memory = 256
      }
    }
  }
}
