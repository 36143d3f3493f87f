"""The load generator against real HTTP servers on loopback: a threaded ``http.server`` that records what
it received (keep-alive, chunked, errors, closes, stalls on request) and a real uvicorn."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.measure.load import LoadError, LoadGenerator, LoadResult, LoadSpec, build_loadgen, text_for
from tests._load import spec_for
from tests._serving import serving

# ---------------------------------------------------------------------------- a recording server


class Recorder(ThreadingHTTPServer):
    """Stores each text under a fresh id, like the apps do, and counts requests received."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connects, and a dropped SYN costs a second

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.texts: dict[int, str] = {}
        self.received = 0

    def store(self, texts: list[str]) -> list[int]:
        with self.lock:
            first = len(self.texts) + 1
            for offset, text in enumerate(texts):
                self.texts[first + offset] = text
            return list(range(first, first + len(texts)))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Recorder

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.received += 1
        url = urlsplit(self.path)
        (text,) = parse_qs(url.query)["text"]
        self.answer(201, {"id": self.server.store([text])[0]})

    def do_POST(self) -> None:
        self.server.received += 1
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = self.path
        if route == "/items":
            self.answer(201, {"id": self.server.store([payload["text"]])[0]})
        elif route == "/items/bulk":
            self.answer(201, {"ids": self.server.store(payload["texts"])})
        elif route == "/errors":  # 422 and 500 in turn
            self.answer(422 if self.server.received % 2 else 500, {"detail": "no"})
        elif route == "/close":  # answers, then closes the connection
            self.close_connection = True
            self.answer(201, {"id": self.server.store([payload["text"]])[0]}, close=True)
        elif route == "/chunked":  # a chunked body in three chunks, with a trailer
            row_id = self.server.store([payload["text"]])[0]
            body = json.dumps({"id": row_id, "cpu_ms": 0.25}).encode()  # default separators: spaces
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:5], body[5:11], body[11:]):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif route == "/stall":  # never answers in time
            time.sleep(3)
        else:
            self.answer(404, {"detail": "not found"})

    def answer(self, status: int, payload: dict, close: bool = False) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Recorder]:
    with serving(Recorder()) as recorder:
        yield recorder


def run(spec: LoadSpec, workdir: Path) -> LoadResult:
    with LoadGenerator(spec, workdir) as load:
        load.wait_warm()
        load.go()
        return load.wait_done()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_group_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


# ---------------------------------------------------------------------------- texts and ids


def test_single_inserts_return_ids_for_the_texts_sent(server, tmp_path):
    result = run(spec_for(server.server_port, prefix="single"), tmp_path)
    measured = result.measured
    assert measured and result.summary["requests"] == len(measured)
    assert result.summary["status_counts"] == {"201": len(measured)}
    assert result.summary["warmup_requests"] == len(result.acks) - len(measured)
    assert all(ack.status == 201 and len(ack.ids) == 1 for ack in result.acks)
    assert {server.texts[ack.ids[0]] for ack in result.acks} == {text_for("single", a.seq) for a in result.acks}
    for ack in result.acks:
        assert server.texts[ack.ids[0]] == text_for("single", ack.seq)
    assert sorted(ack.seq for ack in result.acks) == list(range(len(result.acks)))


def test_bulk_inserts_return_one_id_per_text_in_order(server, tmp_path):
    spec = spec_for(server.server_port, path="/items/bulk", body="texts", inserts=3, prefix="bulk")
    result = run(spec, tmp_path)
    assert result.measured
    for ack in result.acks:
        assert ack.status == 201 and len(ack.ids) == 3
        assert [server.texts[i] for i in ack.ids] == [text_for("bulk", ack.seq, j) for j in range(3)]


def test_query_requests_carry_the_text_in_the_url(server, tmp_path):
    result = run(spec_for(server.server_port, method="GET", body="query", prefix="q_1"), tmp_path)
    assert result.measured
    for ack in result.acks:
        assert ack.status == 201 and server.texts[ack.ids[0]] == text_for("q_1", ack.seq)


# ---------------------------------------------------------------------------- responses


def test_error_statuses_are_counted_and_carry_no_ids(server, tmp_path):
    result = run(spec_for(server.server_port, path="/errors", warmup=0), tmp_path)
    counts = result.summary["status_counts"]
    assert set(counts) == {"422", "500"}
    assert sum(counts.values()) == result.summary["requests"] == len(result.acks)
    assert all(ack.ids == () for ack in result.acks)


def test_chunked_responses_are_decoded_and_sum_field_adds_them_up(server, tmp_path):
    spec = spec_for(server.server_port, path="/chunked", sum_field="cpu_ms", prefix="chunk")
    result = run(spec, tmp_path)
    measured = result.measured
    assert measured and all(ack.status == 201 for ack in result.acks)
    assert all(server.texts[ack.ids[0]] == text_for("chunk", ack.seq) for ack in result.acks)
    field = result.summary["sum_field"]
    assert field["name"] == "cpu_ms" and field["count"] == len(measured)
    assert field["sum"] == pytest.approx(0.25 * len(measured))


def test_server_closing_connections_costs_no_request(server, tmp_path):
    result = run(spec_for(server.server_port, path="/close", prefix="close"), tmp_path)
    assert result.measured and all(ack.status == 201 for ack in result.acks)


@pytest.mark.alone
def test_a_request_past_its_timeout_counts_as_status_0(server, tmp_path):
    spec = spec_for(server.server_port, path="/stall", warmup=0, duration=0.2, concurrency=2, timeout=0.3)
    started = time.monotonic()
    result = run(spec, tmp_path)
    assert time.monotonic() - started < 2.5
    assert result.summary["status_counts"] == {"0": 2}
    assert result.summary["latency_ms"]["max"] is None  # failures are left out of the latencies


def test_real_uvicorn_streaming_a_chunked_body(tmp_path):
    (tmp_path / "streaming.py").write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http'\n"
        "    await send({'type': 'http.response.start', 'status': 201, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'{\"id\": 7, ', 'more_body': True})\n"
        "    await send({'type': 'http.response.body', 'body': b'\"cpu_ms\": 1.5}'})\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "--port", str(port), "--log-level",
         "warning", "streaming:app"],
        process_group=0,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "uvicorn did not start"
                time.sleep(0.05)
        result = run(spec_for(port, sum_field="cpu_ms", concurrency=4, warmup=0.1, duration=0.3), tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert result.measured and all(ack.status == 201 and ack.ids == (7,) for ack in result.acks)
    assert result.summary["sum_field"]["sum"] == pytest.approx(1.5 * len(result.measured))


# ---------------------------------------------------------------------------- timing


@pytest.mark.alone
def test_rate_mode_holds_the_rate(server, tmp_path):
    result = run(spec_for(server.server_port, rate=200, warmup=0, duration=1.5, prefix="rate"), tmp_path)
    summary = result.summary
    assert 300 * 0.7 <= summary["requests"] <= 300 * 1.3
    assert summary["window_s"] == pytest.approx(1.5, abs=0.5)
    assert summary["unsent"] <= 0.3 * 300


def test_warm_go_done_windows_are_quiescent(server, tmp_path):
    spec = spec_for(server.server_port, warmup=0.4, duration=0.4, prefix="seq")
    with LoadGenerator(spec, tmp_path) as load:
        load.wait_warm()
        at_warm = server.received
        time.sleep(0.2)
        assert server.received == at_warm  # nothing in flight, nothing issued while waiting for GO
        load.go()
        result = load.wait_done()
    warm = [ack.seq for ack in result.acks if ack.phase == "w"]
    measured = [ack.seq for ack in result.measured]
    assert warm and measured and max(warm) < min(measured)
    assert len(warm) == at_warm and len(result.acks) == server.received
    assert result.summary["warmup_requests"] == len(warm)
    assert result.summary["window_s"] == pytest.approx(0.4, abs=0.3)


def test_requests_makes_the_window_exactly_n_requests_whatever_the_duration(server, tmp_path):
    for duration, n in ((0, 237), (30, 5)):  # no window by time at all; a window far longer than needed
        started = time.monotonic()
        result = run(spec_for(server.server_port, duration=duration, requests=n, prefix=f"n{n}"), tmp_path)
        assert time.monotonic() - started < 10
        measured = result.measured
        assert len(measured) == n == result.summary["requests"]
        assert result.summary["status_counts"] == {"201": n}
        warm = sorted(ack.seq for ack in result.acks if ack.phase == "w")
        assert sorted(ack.seq for ack in measured) == list(range(len(warm), len(warm) + n))
        assert len(result.acks) == server.received  # drained: nothing left in flight after DONE
        server.received = 0


@pytest.mark.alone
def test_requests_at_a_rate_sends_n_on_schedule(server, tmp_path):
    spec = spec_for(server.server_port, rate=400, warmup=0, duration=0, requests=100, prefix="nrate")
    result = run(spec, tmp_path)
    assert len(result.measured) == 100 and result.summary["unsent"] == 0
    assert 99 / 400 <= result.summary["window_s"] < 5  # the last one is not sent before its time


def test_bad_requests_count_is_refused(tmp_path):
    for value in ("-1", "100000001", "2.5", "x"):
        done = subprocess.run([build_loadgen(), "--port", "80", "--requests", value, "--out", tmp_path / "o"],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2 and f"--requests must be 0-100000000, got '{value}'" in done.stderr


# ---------------------------------------------------------------------------- refusals and failures


def test_connection_refused_is_a_load_error(tmp_path):
    port = free_port()
    with pytest.raises(LoadError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused"):
        run(spec_for(port), tmp_path)


def test_non_loopback_hosts_are_refused(tmp_path):
    with pytest.raises(LoadError, match="only a loopback address"):
        run(spec_for(9, host="192.0.2.1"), tmp_path)
    argv = [build_loadgen(), "--host", "example.com", "--port", "80", "--duration", "1", "--out", tmp_path / "o"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "loopback" in done.stderr


def test_bad_prefix_is_refused(tmp_path):
    done = subprocess.run([build_loadgen(), "--port", "80", "--prefix", "a b", "--out", tmp_path / "o"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and re.search(r"--prefix must be .*\[A-Za-z0-9_-\]", done.stderr)


def test_stop_ends_the_process_without_measuring(server, tmp_path):
    argv = spec_for(server.server_port, warmup=0).argv(build_loadgen(), tmp_path / "acks")
    done = subprocess.run(argv, input="STOP\n", capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 and done.stdout == "WARM\n"


def test_sigterm_ends_the_process_promptly(server, tmp_path):
    argv = spec_for(server.server_port, warmup=30).argv(build_loadgen(), tmp_path / "acks")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    time.sleep(0.3)
    proc.terminate()
    assert proc.wait(timeout=2) == -15
    proc.stdin.close()
    proc.stdout.close()


def test_the_process_group_is_gone_after_exit(server, tmp_path):
    with LoadGenerator(spec_for(server.server_port, warmup=0), tmp_path) as load:
        pid = load.pid
        load.wait_warm()
    assert_group_gone(pid)


def test_the_process_group_is_gone_after_the_body_raised(server, tmp_path):
    with pytest.raises(RuntimeError, match="boom"), LoadGenerator(spec_for(server.server_port), tmp_path) as load:
        pid = load.pid
        raise RuntimeError("boom")
    assert_group_gone(pid)


# ---------------------------------------------------------------------------- building


def test_build_is_cached_by_source_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    binary = build_loadgen()
    assert binary.parent == tmp_path / "insertbench" and re.fullmatch(r"loadgen-[0-9a-f]{12}", binary.name)
    assert os.access(binary, os.X_OK) and build_loadgen() == binary
    assert [p.name for p in binary.parent.iterdir()] == [binary.name]  # no temp file left behind


def test_missing_compiler_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(LoadError, match="install a C compiler"):
        build_loadgen()
