"""Watching a harness run from outside: every process it has had and every temporary directory it has made."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psutil

from harness.measure.process import OWNER_FILE

TEMP_DIR = re.compile(r"/tmp/insertbench-[^/\s]+")


class Watched:
    """The processes and temporary directories a run has had, gathered while it runs (call ``look`` often)."""

    def __init__(self, root: subprocess.Popen) -> None:
        self.root, self.processes, self.dirs = root, {}, set()

    def look(self) -> None:
        try:
            with_children = [psutil.Process(self.root.pid), *psutil.Process(self.root.pid).children(recursive=True)]
        except psutil.NoSuchProcess:  # it has ended
            return
        for proc in with_children:
            try:
                self.processes[proc.pid] = proc.create_time()
                self.dirs.update(TEMP_DIR.findall(" ".join(proc.cmdline())))
            except psutil.NoSuchProcess:
                continue
        pids = {str(pid) for pid in self.processes}
        for path in Path("/tmp").glob("insertbench-*"):
            owner = path / OWNER_FILE
            if owner.is_file() and (owner.read_text().split() or [""])[0] in pids:  # empty while it is being written
                self.dirs.add(str(path))

    def alive(self) -> list[str]:
        """The command lines of the processes seen that still run (zombies aside)."""
        found = []
        for pid, started in self.processes.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(" ".join(proc.cmdline()))
            except psutil.NoSuchProcess:
                continue
        return found

    def left(self) -> list[str]:
        """The directories seen that still exist."""
        return sorted(d for d in self.dirs if Path(d).exists())
