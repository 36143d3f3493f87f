"""Unit tests start nothing: no PostgreSQL, no server, no process, no connection; a test that needs one belongs in
tests/system, whose conftest holds the database."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest


@pytest.fixture(autouse=True)
def nothing_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(what: str):
        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"a unit test {what}: it belongs in tests/system")

        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a process"))
    monkeypatch.setattr(os, "fork", refuse("forked"))
    monkeypatch.setattr(socket.socket, "connect", refuse("opened a connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("opened a connection"))
