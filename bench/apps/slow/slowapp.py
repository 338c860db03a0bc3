"""A WSGI app with a fast and a slow path, for the bench's load part
(bench/load_aware.go), run by gunicorn's sync worker under handoff:

    handoff run --listen http=tcp://127.0.0.1:8080 --workers 4 -- \\
        python3 -m gunicorn --chdir bench/apps/slow --workers 1 --preload slowapp:app

`/slow` sleeps SLOW_MS milliseconds (default 1000) before it answers: a sync
worker serves nothing else meanwhile. Any other path answers at once. Every
answer names the process, in the format of examples/hello:

    pid=1234 slot=0 generation=3 version=dev server=gunicorn
"""
import os
import time

SLOW_S = int(os.environ.get("SLOW_MS", "1000")) / 1000.0


def app(environ, start_response):
    if environ.get("PATH_INFO", "/") == "/slow":
        time.sleep(SLOW_S)
    body = "pid={} slot={} generation={} version={} server=gunicorn\n".format(
        os.getpid(),
        os.environ.get("HANDOFF_WORKER", "-"),
        os.environ.get("HANDOFF_GENERATION", "-"),
        os.environ.get("APP_VERSION", "dev"),
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
