"""The floor under every ASGI server: a raw uvloop HTTP server's CPU per request, under the matrix's own load.

``python -m harness floor`` (``nox -s floor``) serves a fixed JSON answer from an ``asyncio.Protocol`` on
uvloop, with no HTTP parser beyond finding the end of each request and no ASGI, JSON or framework, pinned as a
server of the matrix is, and drives it with the matrix's load generator: a POST with a 20-odd-byte JSON body,
64 connections, a warm-up, then a measured window whose edges are quiescent. What it costs per request is
what the event loop and the kernel's loopback TCP cost: no ASGI server can go below it, so the `asgi/*/none`
cells are read against it.

Run as a script (``python harness/measure/floor.py PORT``), this file is the server. In a run it is also a
cell, ``floor/uvloop/none`` (``app()``): the run measures it the way it measures every cell, in the same run,
so the report reads each server's bare cell against it and the load generator's own cost at its fastest.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.axes import FLOOR, ROOT
from harness.measure.apps import App

HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}"
CREATED = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
ids = itertools.count(1)


class Http(asyncio.Protocol):
    """Finds each request's end (its head, then Content-Length bytes) and answers it: nothing more."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            length = LENGTH.search(head)
            total = end + 4 + (int(length.group(1)) if length else 0)
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            if head.startswith(b"GET /health"):
                self.transport.write(HEALTH)
                continue
            body = b'{"id":%d}' % next(ids)
            self.transport.write(CREATED % (len(body), body))


def app() -> App:
    """The floor as an app of the matrix: served by the ``uvloop`` server (``axes.SERVERS``), no database."""
    return App(name=FLOOR, module="harness.measure.floor", root=ROOT, db_layers=("none",),
               endpoints={"one": ("POST", "/items")}, interfaces=("protocol",))


def serve(port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def measure(duration: float, warmup: float, concurrency: int) -> dict[str, float]:
    """Serve, load, and read the server's CPU over the measured window."""
    from harness.measure.counters import tree_cpu
    from harness.measure.load import LoadGenerator, LoadSpec
    from harness.measure.process import free_port, kill_group, preexec, split_cpus
    from harness.measure.servers import Server, _wait_healthy

    server_cpus, load_cpus = split_cpus(1)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="insertbench-floor-") as tmp:
        log = Path(tmp, "stderr.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, __file__, str(port)], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=preexec(cpus=server_cpus))
        try:
            _wait_healthy(Server(proc=proc, port=port, log=log), 30)
            spec = LoadSpec(host="127.0.0.1", port=port, method="POST", path="/items", body="text", inserts=1,
                            concurrency=concurrency, rate=0, warmup=warmup, duration=duration, prefix="floor")
            with LoadGenerator(spec, Path(tmp), cpus=load_cpus) as load:
                load.wait_warm(timeout=warmup + 60)
                before = tree_cpu(proc.pid)
                load.go()
                result = load.wait_done(timeout=duration + 60)
                spent = tree_cpu(proc.pid) - before
        finally:
            kill_group(proc)
    summary = result.summary
    ok = sum(n for status, n in summary["status_counts"].items() if 200 <= int(status) < 300)
    return {"requests": ok, "errors": summary["requests"] - ok, "window_s": summary["window_s"],
            "us_per_request": spent.total * 1e6 / ok if ok else float("nan"),
            "user_us": spent.user * 1e6 / ok if ok else float("nan"),
            "system_us": spent.system * 1e6 / ok if ok else float("nan"),
            "rps": ok / summary["window_s"] if summary["window_s"] else float("nan")}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness floor", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per window (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (default 1)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="windows, each on a fresh server (default 3)")
    args = parser.parse_args(argv)
    if not (args.duration > 0 and args.warmup >= 0 and args.concurrency > 0 and args.repeats > 0):
        parser.error("--duration, --concurrency and --repeats take positive numbers, --warmup 0 or more")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    figures = []
    for repeat in range(args.repeats):
        m = measure(args.duration, args.warmup, args.concurrency)
        figures.append(m["us_per_request"])
        print(f"raw uvloop server #{repeat + 1}: {m['us_per_request']:.1f} µs of CPU per request "
              f"({m['user_us']:.1f} user, {m['system_us']:.1f} system), {m['rps']:,.0f} requests/s, "
              f"{m['errors']} errors", flush=True)
    figures.sort()
    print(f"floor: median {figures[len(figures) // 2]:.1f} µs per request over {len(figures)} windows "
          f"(min {figures[0]:.1f}, max {figures[-1]:.1f}); compare the asgi/*/none cells of a run")
    return 0


if __name__ == "__main__":
    serve(int(sys.argv[1]))
