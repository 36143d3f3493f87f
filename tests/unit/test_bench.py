"""harness.model: the one sample record, the run file's schemas, run ids and the resume check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.model import SCHEMA, Cell, Run, Sample, new_run_id, resume_mismatches, write_atomically

DATA = Path(__file__).parents[1] / "data"
CELL = Cell("asgi", "uvicorn", "asyncpg")


def test_a_sample_writes_and_reads_itself():
    sample = Sample(cell=CELL, repeat=2, kind="instructions", status="ok", verified=True, window_s=1.5,
                    requests=100, requests_ok=100, inserts=100, server_cpu_user_s=0.5, server_cpu_system_s=0.1,
                    latency_ms={"p50": 1.0, "p99": 2.0}, instructions=123_456_789,
                    machine={"ticks": 300, "steal_ticks": 2, "iowait_ticks": 0, "loadavg_1m": 1.2})
    data = sample.to_dict()
    assert data["framework"] == "asgi" and data["kind"] == "instructions" and data["instructions"] == 123_456_789
    assert Sample.from_dict(json.loads(json.dumps(data))) == sample


def test_schema_1_runs_read_as_cpu_samples(tmp_path):
    directory = tmp_path / "old"
    directory.mkdir()
    (directory / "run.json").write_text((DATA / "run_small.json").read_text())
    run = Run.load(directory)
    assert json.loads((DATA / "run_small.json").read_text())["schema"] == 1
    assert run.samples and all(s.kind == "cpu" and s.instructions is None for s in run.samples)
    run.save()  # written back as the current schema, every sample kept
    again = Run.load(directory)
    assert json.loads((directory / "run.json").read_text())["schema"] == SCHEMA
    assert again.samples == run.samples


def test_an_unknown_schema_is_refused(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"schema": 99, "samples": []}))
    with pytest.raises(ValueError, match="schema 99"):
        Run.load(tmp_path)


def test_run_ids_start_with_the_time_and_differ_within_a_second():
    ids = {new_run_id("0123456789abcdef") for _ in range(20)}
    assert len(ids) == 20  # 24 random bits: a clash among 20 has odds of about 1 in 80,000
    assert all(i[:15].replace("-", "").isdigit() and "-0123456-" in i for i in ids)


def test_write_atomically_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "matrix.md"
    path.write_text("old")
    write_atomically(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["matrix.md"]


ENV = {"git_commit": "a" * 40, "python": "3.11.7", "python_build": {"executable": "/usr/bin/python3.11",
       "configure": "--x"}, "packages": {"fastapi": "0.1", "sqlalchemy": "2.1"},
       "postgres": {"version": "15.18", "embedded": True, "dsn": "postgresql://u:***@127.0.0.1:1/db"},
       "date": "2026-11-26T00:00:00Z"}


def test_resume_accepts_the_same_environment_and_names_what_changed():
    same = json.loads(json.dumps(ENV)) | {"date": "later"}
    same["postgres"]["dsn"] = "postgresql://u:***@127.0.0.1:2/db"  # another embedded cluster, another port
    assert resume_mismatches(ENV, same) == []
    other = json.loads(json.dumps(ENV))
    other["git_commit"] = "b" * 40
    other["packages"]["fastapi"] = "0.2"
    other["python_build"]["executable"] = "/opt/python"
    other["postgres"]["embedded"] = False
    changed = resume_mismatches(ENV, other)
    assert changed == ["commit (aaaaaaa → bbbbbbb)", "interpreter (/usr/bin/python3.11 → /opt/python)",
                       "package versions (fastapi 0.1 → 0.2)", "database (True → False)"]
