"""A WSGI app for gunicorn, which handoff starts through systemd socket
activation (gunicorn takes LISTEN_FDS when LISTEN_PID is its own pid)."""
import os


def app(environ, start_response):
    body = "pid={} slot={} generation={} server=gunicorn\n".format(
        os.getpid(), os.environ.get("HANDOFF_WORKER"), os.environ.get("HANDOFF_GENERATION")
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
