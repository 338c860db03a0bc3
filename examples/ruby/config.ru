# A Rack app for puma under handoff:
#
#   handoff run --listen http=tcp://127.0.0.1:8080 -- \
#       puma --bind-to-activated-sockets only --environment production examples/ruby/config.ru
#
# puma takes the socket from LISTEN_FDS and, with the sd_notify gem
# installed (Debian: ruby-sd-notify), sends READY=1 once it serves. Every
# answer names the process, in the format of examples/hello:
#
#   pid=1234 slot=0 generation=3 version=dev server=puma
body = format("pid=%d slot=%s generation=%s version=%s server=puma\n",
              Process.pid, ENV.fetch("HANDOFF_WORKER", "-"),
              ENV.fetch("HANDOFF_GENERATION", "-"), ENV.fetch("APP_VERSION", "dev")).freeze

run lambda { |_env|
  [200, { "content-type" => "text/plain", "content-length" => body.bytesize.to_s }, [body]]
}
