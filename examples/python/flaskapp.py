"""A Flask app for gunicorn under handoff:

    handoff run --listen http=tcp://127.0.0.1:8080 -- \\
        gunicorn --chdir examples/python --workers 1 --preload --graceful-timeout 20 flaskapp:app

Every answer names the process, in the format of examples/hello:

    pid=1234 slot=0 generation=3 version=dev server=gunicorn
"""
import os

from flask import Flask, Response

app = Flask(__name__)


@app.get("/")
def hello():
    body = "pid={} slot={} generation={} version={} server=gunicorn\n".format(
        os.getpid(),
        os.environ.get("HANDOFF_WORKER", "-"),
        os.environ.get("HANDOFF_GENERATION", "-"),
        os.environ.get("APP_VERSION", "dev"),
    )
    return Response(body, mimetype="text/plain")
