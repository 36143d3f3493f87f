"""The load generator against a hostile server and hostile arguments: malformed or oversized responses fail
their own request (status 0) and nothing else, a stalled connect does not stall the other connections, bad
numbers are refused before anything starts, and the generator dies with the process that started it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.measure.load import LoadError, LoadGenerator, LoadSpec, build_loadgen
from tests.system.test_load import Recorder, run, spec_for

ID_BODY = b'{"id":12345}'  # 12 bytes
LIMIT = 1 << 20  # the generator's bound on one response, headers included


class Scripted:
    """A raw HTTP/1.1 server on loopback: every request, on any connection, gets ``answer(n)`` (n counts
    requests from 1); the connection is closed after a response whose bytes contain ``Connection: close``."""

    def __init__(self, answer: Callable[[int], bytes]) -> None:
        self.answer = answer
        self.requests = 0
        self.content_types: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the generator resets connections it gives up on
            self._answer_each(conn)

    def _answer_each(self, conn: socket.socket) -> None:
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
            length = int(headers.get(b"Content-Length", b"0"))
            while len(pending) < length:
                pending += conn.recv(65536)
            pending = pending[length:]
            with self.lock:
                self.requests += 1
                n = self.requests
                self.content_types.append(headers.get(b"Content-Type", b"").decode())
            answer = self.answer(n)
            conn.sendall(answer)
            if b"Connection: close" in answer.split(b"\r\n\r\n")[0]:
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[int], bytes]], Scripted]]:
    servers: list[Scripted] = []

    def start(answer: Callable[[int], bytes]) -> Scripted:
        servers.append(Scripted(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def response(headers: str, body: bytes = ID_BODY) -> Callable[[int], bytes]:
    return lambda n: f"HTTP/1.1 201 Created\r\n{headers}\r\n\r\n".encode() + body


def exactly(port: int, n: int = 6, **changes: object) -> LoadSpec:
    """A window of exactly ``n`` requests, no warm-up, two connections."""
    return spec_for(port, **{"warmup": 0, "duration": 0, "requests": n, "concurrency": 2, **changes})


# ---------------------------------------------------------------------------- Content-Length


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Length: 1x2",  # lenient parsing skipped the x: 12
        "Content-Length: 18446744073709551628",  # 2**64 + 12: 20 digits wrapped round to 12
        "Content-Length: 99999999999999999999999999999999999999",
        "Content-Length: 100\r\nContent-Length: 12",  # conflicting: the last one used to win
        "Content-Length: 12\r\nContent-Length: 100",
        "Content-Length: 12, 100",
        "Content-Length: +12",
        "Content-Length: -12",
        "Content-Length: 0x0c",
        "Content-Length: 1 2",
        "Content-Length:",
    ],
)
def test_a_malformed_content_length_fails_its_request_and_closes_the_connection(scripted, tmp_path, headers):
    server = scripted(response(headers))
    result = run(exactly(server.port), tmp_path)
    assert result.summary["status_counts"] == {"0": 6}
    assert all(ack.ids == () for ack in result.acks)


@pytest.mark.parametrize(
    "headers",
    ["Content-Length: 12", "Content-Length:12", "Content-Length: \t12 ", "content-length: 012",
     "Content-Length: 12\r\nContent-Length: 12", "Content-Length: 12,12", "Content-Length: 12 , 12"],
)  # fmt: skip
def test_a_well_formed_content_length_is_read(scripted, tmp_path, headers):
    server = scripted(response(headers))
    result = run(exactly(server.port), tmp_path)
    assert result.summary["status_counts"] == {"201": 6}
    assert all(ack.ids == (12345,) for ack in result.acks)


def test_after_a_malformed_response_the_next_request_gets_a_fresh_connection(scripted, tmp_path):
    bad = response("Content-Length: 1x2")
    good = response("Content-Length: 12")
    server = scripted(lambda n: bad(n) if n % 2 else good(n))
    result = run(exactly(server.port, n=10, concurrency=1), tmp_path)
    assert [ack.status for ack in sorted(result.acks, key=lambda a: a.seq)] == [0, 201] * 5


def test_a_post_sends_its_json_content_type(scripted, tmp_path):
    server = scripted(response("Content-Length: 12"))
    run(exactly(server.port), tmp_path)
    run(exactly(server.port, path="/items/bulk", body="texts", inserts=3, prefix="b"), tmp_path)
    assert server.content_types == ["application/json"] * 12


# ---------------------------------------------------------------------------- the receive buffer


@pytest.mark.parametrize(
    "answer",
    [
        response(f"Content-Length: {2 * LIMIT}", ID_BODY.ljust(2 * LIMIT)),
        response("Transfer-Encoding: chunked", b"%x\r\n%s\r\n0\r\n\r\n" % (2 * LIMIT, ID_BODY.ljust(2 * LIMIT))),
        response("Connection: close", ID_BODY.ljust(2 * LIMIT)),  # no length: the body ends at EOF
    ],
    ids=["content-length", "chunked", "until-eof"],
)
def test_a_response_over_1_mib_fails_its_request(scripted, tmp_path, answer):
    server = scripted(answer)
    result = run(exactly(server.port, n=4), tmp_path)
    assert result.summary["status_counts"] == {"0": 4}


def test_a_response_just_under_1_mib_is_read(scripted, tmp_path):
    server = scripted(response(f"Content-Length: {LIMIT - 1024}", ID_BODY.ljust(LIMIT - 1024)))
    result = run(exactly(server.port, n=4), tmp_path)
    assert result.summary["status_counts"] == {"201": 4}
    assert all(ack.ids == (12345,) for ack in result.acks)


@pytest.mark.alone
def test_an_endless_body_fails_at_the_bound_not_at_the_timeout(tmp_path):
    """A body that never ends used to grow the buffer until the request timed out."""
    listener = socket.create_server(("127.0.0.1", 0))

    def flood() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
            deadline = time.monotonic() + 20
            try:
                while time.monotonic() < deadline:
                    conn.sendall(chunk)
            except OSError:
                return

    threading.Thread(target=flood, daemon=True).start()
    try:
        started = time.monotonic()
        result = run(exactly(listener.getsockname()[1], n=1, concurrency=1, timeout=15), tmp_path)
    finally:
        listener.close()
    assert result.summary["status_counts"] == {"0": 1}
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------- connects


@pytest.mark.alone
def test_a_stalled_reconnect_does_not_stall_the_other_connections(tmp_path):
    """One connection is closed by the server after its first answer and cannot reconnect (the listener's
    accept queue is full, so the SYN is dropped); the other keeps answering at once. A blocking connect
    froze the whole event loop for up to --timeout."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = listener.getsockname()[1]

    def serve(conn: socket.socket, close_after: int) -> None:
        with conn, contextlib.suppress(OSError):
            for _ in range(close_after):
                if not conn.recv(65536):
                    return
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\n\r\n" + ID_BODY)

    try:
        spec = spec_for(port, warmup=0, duration=1.0, concurrency=2, timeout=3)
        with LoadGenerator(spec, tmp_path) as load:
            first, _ = listener.accept()
            second, _ = listener.accept()
            listener.listen(0)  # Linux: a smaller backlog, and one connection never accepted fills it
            filler = socket.create_connection(("127.0.0.1", port))
            threading.Thread(target=serve, args=(first, 10**9), daemon=True).start()
            threading.Thread(target=serve, args=(second, 1), daemon=True).start()
            load.wait_warm()
            started = time.monotonic()
            load.go()
            result = load.wait_done()
            elapsed = time.monotonic() - started
        filler.close()
    finally:
        listener.close()
    assert elapsed < 2  # the window is 1 s; a blocked loop overran it by up to the 3 s timeout
    assert result.summary["requests"] > 100
    assert result.summary["latency_ms"]["max"] < 500


def test_connecting_to_a_closed_port_is_a_clear_load_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(LoadError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"):
            run(spec_for(port, concurrency=50), tmp_path)


@pytest.mark.alone
def test_an_unanswered_connect_is_a_load_error_after_the_timeout(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # the accept queue is full: SYNs are dropped
            started = time.monotonic()
            with pytest.raises(LoadError, match=f"cannot connect to 127.0.0.1:{port}: Connection timed out"):
                run(spec_for(port, concurrency=1, timeout=0.5), tmp_path)
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------------------- numbers


BAD_NUMBERS = [
    ("duration", "nan"), ("duration", "inf"), ("duration", "-inf"), ("duration", "-1"), ("duration", "0"),
    ("duration", "1e300"), ("duration", "2x"), ("duration", ""),
    ("rate", "nan"), ("rate", "inf"), ("rate", "-5"), ("rate", "1e300"),
    ("warmup", "nan"), ("warmup", "inf"), ("warmup", "-0.5"),
    ("timeout", "nan"), ("timeout", "inf"), ("timeout", "0"), ("timeout", "-1"),
    ("port", "80x"), ("concurrency", "4.5"), ("inserts", "0x1"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "value"), BAD_NUMBERS)
def test_the_binary_refuses_a_bad_number_in_one_line(tmp_path, flag, value):
    argv = [build_loadgen(), "--port", "9", "--duration", "1", "--out", tmp_path / "o", f"--{flag}", value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"loadgen: --{flag} must be ")
    assert repr(value) in done.stderr or f"'{value}'" in done.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was opened


def test_zero_warmup_zero_rate_and_zero_duration_with_requests_are_valid(scripted, tmp_path):
    server = scripted(response("Content-Length: 12"))
    argv = [build_loadgen(), "--port", str(server.port), "--out", tmp_path / "o", "--warmup", "0", "--rate", "0",
            "--duration", "0", "--requests", "3"]  # fmt: skip
    done = subprocess.run(argv, input="GO\n", capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("WARM\nDONE\n") and '"requests":3' in done.stdout


# ---------------------------------------------------------------------------- parent death


def gone(pid: int) -> bool:
    """Exited (a zombie counts: pid 1 of a container need not reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


PARENT = """
import sys, time
from pathlib import Path
from harness.measure.load import LoadGenerator
from tests.system.test_load import spec_for
load = LoadGenerator(spec_for(int(sys.argv[1]), warmup=60), Path(sys.argv[2])).__enter__()
print(load.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_generator_dies_with_the_process_that_started_it(tmp_path):
    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(recorder.server_port), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while recorder.received == 0:  # the generator is running its 60 s warm-up
            assert time.monotonic() < deadline and not gone(child)
            time.sleep(0.05)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 2
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = not gone(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        recorder.shutdown()
        recorder.server_close()
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the load generator outlived its parent by 2 s"


def test_a_parent_that_exited_before_the_generator_started_is_noticed(tmp_path):
    """--parent PID names the process that started it; if it is not the parent any more, the generator
    was orphaned before it could ask to die with it, so it exits at once."""
    argv = [build_loadgen(), "--port", "9", "--duration", "1", "--out", tmp_path / "o", "--parent", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "the parent exited" in done.stderr
