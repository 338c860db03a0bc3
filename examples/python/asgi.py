"""A minimal ASGI app (no framework) for uvicorn under handoff:

    handoff run --listen http=tcp://127.0.0.1:8080 -- \\
        python3 -m uvicorn --app-dir examples/python --fd 3 --no-access-log asgi:app

uvicorn takes the socket with --fd 3 but never sends READY=1 itself, so
this app sends it from the ASGI lifespan startup event, which uvicorn runs
just before it starts accepting (sd_notify below: a few lines any ASGI app
can carry). For an app you cannot change, run handoff with --ready http=/
instead: it asks each worker's own socket for / until it answers. A guess
such as --ready delay=2s is too early on a busy machine, and too late on an
idle one.

Every answer names the process, in the format of examples/hello:

    pid=1234 slot=0 generation=3 version=dev server=uvicorn
"""
import os
import socket

BODY = "pid={} slot={} generation={} version={} server=uvicorn\n".format(
    os.getpid(),
    os.environ.get("HANDOFF_WORKER", "-"),
    os.environ.get("HANDOFF_GENERATION", "-"),
    os.environ.get("APP_VERSION", "dev"),
).encode()


def sd_notify(state):
    """Send one sd_notify(3) datagram to NOTIFY_SOCKET, if there is one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(state.encode())


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                sd_notify("READY=1")
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
