"""A run on disk: ``results/<run-id>/run.json``, rewritten atomically after every sample.

run.json (schema 1) holds the options, the environment, the planned cells in order and every sample
measured so far; an interrupted run is finished with ``--resume RUN_ID`` from this file alone, and
reports are rendered from it alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = 1


@dataclass(frozen=True)
class Cell:
    """framework × server × database layer × inserts per request."""

    framework: str
    server: str
    db: str
    inserts_per_request: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        return cls(framework=str(data["framework"]), server=str(data["server"]), db=str(data["db"]),
                   inserts_per_request=int(data.get("inserts_per_request") or 1))

    @property
    def label(self) -> str:
        """framework/server/db, with ×N for N inserts per request."""
        bulk = f" ×{self.inserts_per_request}" if self.inserts_per_request != 1 else ""
        return f"{self.framework}/{self.server}/{self.db}{bulk}"


def sample_key(sample: dict) -> tuple:
    return (sample["framework"], sample["server"], sample["db"], sample["inserts_per_request"], sample["repeat"])


@dataclass
class Run:
    run_id: str
    directory: Path
    options: dict
    cells: list[Cell]
    environment: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "run.json"

    def done(self) -> set[tuple]:
        return {sample_key(s) for s in self.samples}

    def add(self, sample: dict) -> None:
        self.samples.append(sample)
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"schema": SCHEMA, "run_id": self.run_id, "environment": self.environment,
                "options": self.options, "cells": [asdict(c) for c in self.cells], "samples": self.samples}
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, directory: Path) -> Run:
        data = json.loads((directory / "run.json").read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{directory / 'run.json'} has schema {data.get('schema')}, this harness reads {SCHEMA}")
        return cls(run_id=data["run_id"], directory=directory, options=data["options"],
                   cells=[Cell.from_dict(c) for c in data["cells"]], environment=data.get("environment", {}),
                   samples=data.get("samples", []))


def new_run_id(commit: str | None) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{commit[:7]}" if commit else stamp
