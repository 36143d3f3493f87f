"""Measuring a user's own app (``--app``) for real: the load generator's template mode, the shipped example end
to end under both servers on a real PostgreSQL, and every error a user will hit, each refused in one line
before anything is measured."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.measure.load import LoadGenerator, LoadSpec
from harness.measure.own import OwnApp, Request
from tests._serving import serving

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "orders"
EXAMPLE_ARGS = ["--app", "orders:app", "--app-dir", str(EXAMPLE), "--request", "POST /orders",
                "--body", f"@{EXAMPLE / 'order.json'}", "--env", "DATABASE_URL={dsn_asyncpg}",
                "--setup-sql", f"@{EXAMPLE / 'schema.sql'}"]
SHORT = ["--repeats", "1", "--duration", "0.5", "--warmup", "0.3", "--budget", "0", "--concurrency", "8",
         "--no-readme"]


# ---------------------------------------------------------------------------- the load generator's template mode


class Recorder(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.seen.append((self.path, dict(self.headers), body))
        status, answer = (500, b'{"detail": "boom: no such table orders"}') if "fail" in self.path else (201, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with serving(Recorder()) as server:
        yield server


def _load(port: int, request: Request, tmp_path: Path):
    spec = LoadSpec(host="127.0.0.1", port=port, method="POST", path="/items", body="text", inserts=1,
                    concurrency=4, rate=0, warmup=0.1, duration=0.3, prefix="t")
    own = OwnApp(module="m", attr="app", app_dir=tmp_path, request=request)
    with LoadGenerator(own.load_spec(spec, tmp_path), tmp_path) as load:
        load.wait_warm()
        load.go()
        return load.wait_done()


def test_template_requests_carry_a_unique_number_wherever_n_is(recorder, tmp_path):
    request = Request.parse("POST /orders/{n}?q={n}", '{"reference": "order-{n}"}', ["X-Key: k{n}"])
    result = _load(recorder.server_address[1], request, tmp_path)
    numbers = []
    for path, headers, body in recorder.seen:
        n = path.split("?")[0].rsplit("/", 1)[1]
        assert path == f"/orders/{n}?q={n}" and headers["X-Key"] == f"k{n}"
        assert json.loads(body) == {"reference": f"order-{n}"}  # Content-Length matched the expanded body
        assert headers["Content-Type"] == "application/json"
        numbers.append(int(n))
    assert len(numbers) == len(set(numbers)) == len(result.acks) > 10
    assert all(ack.status == 201 and ack.ids == () for ack in result.acks)  # no ids looked for
    assert result.first_error is None


def test_the_first_answer_that_is_not_2xx_is_kept_with_its_body(recorder, tmp_path):
    result = _load(recorder.server_address[1], Request.parse("POST /fail", "{}"), tmp_path)
    assert {ack.status for ack in result.acks} == {500}
    assert result.first_error == '500 {"detail": "boom: no such table orders"}'


def test_template_mode_is_refused_without_a_request_line(tmp_path):
    from harness.measure.load import build_loadgen

    bad = tmp_path / "t.http"
    bad.write_bytes(b"not a request\r\n\r\n")
    done = subprocess.run([build_loadgen(), "--port", "1", "--duration", "1", "--out", tmp_path / "o",
                           "--body", "template", "--template", bad], capture_output=True, text=True)
    assert done.returncode == 2 and "--template must start with a request line" in done.stderr


# ---------------------------------------------------------------------------- end to end, on a real PostgreSQL


def _harness(tmp_path: Path, database, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, BENCH_DSN=database.dsn)
    return subprocess.run([sys.executable, "-m", "harness", "run", "--results", str(tmp_path / "results"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "results").iterdir()
    return run_dir


@pytest.mark.slow
def test_the_example_under_both_servers_writes_two_rows_in_four_statements(tmp_path, database):
    done = _harness(tmp_path, database, *EXAMPLE_ARGS, *SHORT, "--frameworks", "asgi", "--db", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = _run_dir(tmp_path)
    rows = {(r["framework"], r["server"], r["db"]): r for r in csv.DictReader((run_dir / "matrix.csv").open())}
    for server in ("uvicorn", "granian"):
        own = rows["orders", server, "app"]
        assert own["status"] == "ok" and own["verified"] == "true", own
        assert float(own["rows_per_request"]) == pytest.approx(2.0)  # one order, one event
        assert float(own["statements_per_request"]) == pytest.approx(4.0, abs=0.05)  # BEGIN, 2 INSERT, COMMIT
        assert float(own["transactions_per_insert"]) == pytest.approx(1.0, abs=0.05)
        floor = rows["asgi", server, "none"]
        assert float(own["server_cpu_us_per_request"]) > float(floor["server_cpu_us_per_request"])
        assert floor["rows_per_request"] == "0.0000"
    samples = json.loads((run_dir / "run.json").read_text())["samples"]
    tables = [s["extra"]["tables"] for s in samples if s["db"] == "app"]
    assert all(set(t) == {"orders", "order_events"} and t["orders"]["inserted"] == t["order_events"]["inserted"]
               for t in tables)
    report = (run_dir / "matrix.md").read_text()
    assert "## Your app" in report and "`order_events`" in report and "asgi/uvicorn/none" in report
    again = subprocess.run([sys.executable, "-m", "harness", "report", run_dir.name, "--results",
                            str(tmp_path / "results"), "--no-readme"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and (run_dir / "matrix.md").read_text() == report
    resumed = _harness(tmp_path, database, "--resume", run_dir.name)
    assert resumed.returncode == 2 and "measured your app orders: pass the same --app" in resumed.stderr
    compared = subprocess.run([sys.executable, "-m", "harness", "compare", run_dir.name, run_dir.name, "--results",
                               str(tmp_path / "results")], cwd=ROOT, capture_output=True, text=True)
    assert compared.returncode == 0 and "orders/uvicorn/app" in compared.stdout, compared.stdout + compared.stderr


@pytest.mark.slow
def test_a_request_that_fails_mid_run_fails_the_sample_with_the_answer(tmp_path, database):
    app = tmp_path / "app" / "flaky.py"
    app.parent.mkdir()
    app.write_text("calls = 0\n\nasync def app(scope, receive, send):\n    global calls\n"
                   "    if scope['type'] != 'http':\n        return\n    calls += 1\n"
                   "    status, body = (201, b'{}') if calls < 3 else (500, b'{\"detail\": \"pool exhausted\"}')\n"
                   "    await send({'type': 'http.response.start', 'status': status, 'headers': []})\n"
                   "    await send({'type': 'http.response.body', 'body': body})\n")
    done = _harness(tmp_path, database, "--app", "flaky:app", "--app-dir", str(app.parent), "--request", "GET /x",
                    "--servers", "uvicorn", "--frameworks", "asgi", "--db", "none", *SHORT)
    assert done.returncode == 0, done.stderr
    cells = {(r["framework"], r["status"]) for r in csv.DictReader((_run_dir(tmp_path) / "matrix.csv").open())}
    assert ("flaky", "failed") in cells
    assert '500 {"detail": "pool exhausted"}' in (_run_dir(tmp_path) / "matrix.md").read_text()


ERROR_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    status = {"/health": 200, "/ok": 500}.get(scope["path"], 404)
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b'{"detail": "Not Found here"}'})
"""


@pytest.fixture
def error_app(tmp_path: Path) -> Path:
    folder = tmp_path / "myservice"
    folder.mkdir()
    (folder / "svc.py").write_text(ERROR_APP)
    (folder / "broken.py").write_text("import no_such_package_here\n")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--app", "broken:app", "--request", "GET /ok"],
     "cannot import broken from .*: ModuleNotFoundError: No module named 'no_such_package_here'; fix --app-dir"),
    (["--app", "svc:application", "--request", "GET /ok"],
     r"svc has no attribute 'application' \(it has: app\); name the ASGI application with --app svc:NAME"),
    (["--app", "svc:app", "--request", "GET /missing"],
     r"GET /missing answered 404 at startup: \{\"detail\": \"Not Found here\"\}; fix the request"),
    (["--app", "svc:app", "--request", "GET /ok", "--health", "GET /missing"],
     r"GET /missing answered 404 at startup"),
    (["--app", "svc:app", "--request", "GET /ok", "--health", "GET /health"],
     r"GET /ok answered 500 in warm-up: \{\"detail\": \"Not Found here\"\}; fix the request"),
    (["--app", "svc:app", "--request", "GET /ok", "--setup-sql", "CREATE TABLE broken (id serial primary"],
     "--setup-sql CREATE TABLE broken .* failed: PostgresSyntaxError: syntax error at end of input; fix the SQL"),
])
def test_what_a_user_gets_wrong_is_refused_in_one_line_before_any_sample(tmp_path, database, error_app, args,
                                                                         message):
    done = _harness(tmp_path, database, *args, "--app-dir", str(error_app), "--servers", "uvicorn", *SHORT,
                    timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("insertbench: ")
    assert re.search(message, line), line
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())  # nothing kept


@pytest.mark.slow
def test_a_server_missing_from_app_python_is_named_with_how_to_add_it(tmp_path, database, error_app):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = _harness(tmp_path, database, "--app", "svc:app", "--app-dir", str(error_app), "--request", "GET /ok",
                    "--app-python", str(venv / "bin" / "python"), "--servers", "granian", *SHORT, timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "granian is not importable in --app-python" in line and "-m pip install granian==" in line, line


def test_requirements_that_are_not_there_are_refused_before_anything_starts(tmp_path, database):
    done = _harness(tmp_path, database, *EXAMPLE_ARGS, "--requirements", str(tmp_path / "nope.txt"), timeout=60)
    assert done.returncode == 2 and done.stderr.strip().endswith("nope.txt: no such file"), done.stderr


def test_app_options_without_app_are_refused(tmp_path, database):
    done = _harness(tmp_path, database, "--request", "POST /orders", "--frameworks", "asgi", timeout=60)
    assert done.returncode == 2 and "--request go with --app MODULE:ATTR" in done.stderr


@pytest.mark.slow
def test_profile_and_instructions_windows_cover_your_app(tmp_path, database):
    app = tmp_path / "app" / "plain.py"
    app.parent.mkdir()
    app.write_text("async def app(scope, receive, send):\n    if scope['type'] != 'http':\n        return\n"
                   "    await send({'type': 'http.response.start', 'status': 201, 'headers': []})\n"
                   "    await send({'type': 'http.response.body', 'body': b'{}'})\n")
    done = _harness(tmp_path, database, "--app", "plain:app", "--app-dir", str(app.parent), "--request",
                    "POST /p/{n}", "--body", "{}", "--servers", "uvicorn", "--frameworks", "asgi", "--db", "none",
                    "--profile", "--instructions", "--instruction-requests", "200", *SHORT)
    assert done.returncode == 0, done.stdout + done.stderr
    samples = json.loads((_run_dir(tmp_path) / "run.json").read_text())["samples"]
    own = {s["kind"]: s for s in samples if s["framework"] == "plain"}
    assert set(own) == {"cpu", "instructions", "profile"} and all(s["status"] == "ok" for s in own.values()), own
    assert own["instructions"]["instructions"] > 200 * 10_000
    [row] = [line for line in (_run_dir(tmp_path) / "matrix.md").read_text().splitlines()
             if line.startswith("| uvicorn | **")]
    assert row.split(" | ")[8] != "—"  # instructions per request, from the callgrind window
