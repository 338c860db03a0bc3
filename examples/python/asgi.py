"""A minimal ASGI app (no framework) for uvicorn under handoff:

    handoff run --listen http=tcp://127.0.0.1:8080 -- \\
        python3 -m uvicorn --app-dir examples/python --fd 3 --no-access-log asgi:app

uvicorn takes the socket with --fd 3 but never sends READY=1 itself. This
app does, from the ASGI lifespan startup event, which uvicorn runs just
before it starts accepting on the socket (the socket already listens, so
a connection made in between waits in the backlog). An app that cannot do
that runs with handoff's --ready delay=2s instead.

Every answer names the process, in the format of examples/hello:

    pid=1234 slot=0 generation=3 version=dev server=uvicorn
"""
import os
import socket


def sd_notify(state):
    """Send state (e.g. "READY=1") to $NOTIFY_SOCKET; a no-op without it."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())


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
                sd_notify("READY=1")
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
