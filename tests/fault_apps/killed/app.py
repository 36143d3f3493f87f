"""A faulty app for the harness's tests: the bare app, until it SIGKILLs its own process, as the kernel's OOM killer
would, ``FAULT_KILL_AFTER`` seconds (default 1) after its first insert request: under uvicorn's single worker that
process is the server, and with a short warm-up the kill lands in the measured window."""

import os
import signal
import sys
import threading

from apps.asgi.app import app as bare

KILL_AFTER = float(os.environ.get("FAULT_KILL_AFTER", "1.0"))
_timer: list[threading.Timer] = []


def _kill() -> None:
    print(f"killed app: SIGKILL to my own process {os.getpid()}, as the OOM killer would", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] != "/health" and not _timer:
        _timer.append(threading.Timer(KILL_AFTER, _kill))
        _timer[0].start()
    await bare(scope, receive, send)
