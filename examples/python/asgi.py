"""A minimal ASGI app (no framework) for uvicorn under handoff:

    handoff run --listen http=tcp://127.0.0.1:8080 --ready http=/ -- \\
        python3 -m uvicorn --app-dir examples/python --fd 3 --no-access-log asgi:app

uvicorn takes the socket with --fd 3 but never sends READY=1, so handoff
probes each worker itself (--ready http=/): it asks the worker's own
socket for / until it answers, and counts it ready then. A guess such as
--ready delay=2s is too early on a busy machine, and too late on an idle
one.

Every answer names the process, in the format of examples/hello:

    pid=1234 slot=0 generation=3 version=dev server=uvicorn
"""
import os

BODY = "pid={} slot={} generation={} version={} server=uvicorn\n".format(
    os.getpid(),
    os.environ.get("HANDOFF_WORKER", "-"),
    os.environ.get("HANDOFF_GENERATION", "-"),
    os.environ.get("APP_VERSION", "dev"),
).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
    })
    await send({"type": "http.response.body", "body": BODY})
