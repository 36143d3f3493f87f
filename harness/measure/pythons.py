"""The interpreters a run's servers run on: found on this machine, each with a virtualenv of the apps' packages.

A stack's cost moves with its Python (version, and whether the build has PGO/LTO), so a run can serve its
cells under several interpreters (``--python 3.11,3.12,/usr/bin/python3.11``) and the report puts each
beside the first. The harness's own interpreter serves as it is; any other gets a virtualenv, made once
in the user's cache and reused, holding exactly the packages the servers import: the shared pins of
``pyproject.toml`` less the harness's own tools, and every ``apps/*/requirements.txt``.

An interpreter is known by a label: its version (``3.12.1``), and "" for the harness's own, which is what
a cell's ``python`` holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.measure.apps import ROOT

MINIMUM = (3, 11)
HARNESS_ONLY = {"psutil", "rich", "matplotlib", "scipy", "py-spy"}  # the harness's tools, not the servers'
PROBE = ("import json, platform, sys; sys.path.insert(0, sys.argv[1]); "
         "from harness.measure.metadata import python_build; "
         "print(json.dumps({'implementation': platform.python_implementation(), 'version': "
         "platform.python_version(), 'base': sys.base_prefix, 'build': python_build()}))")


@dataclass(frozen=True)
class Interpreter:
    """One Python the servers can run on."""

    label: str  # "" for the harness's own
    base: str  # the interpreter itself
    version: str
    build: dict = field(default_factory=dict, compare=False)
    python: str = ""  # what serves: the harness's own executable, or the virtualenv's python

    def describe(self) -> dict:
        return {"label": self.label, "base": self.base, "version": self.version, "python": self.python,
                "build": self.build}

    @classmethod
    def from_dict(cls, data: dict) -> Interpreter:
        return cls(label=str(data.get("label") or ""), base=str(data["base"]), version=str(data["version"]),
                   build=dict(data.get("build") or {}), python=str(data.get("python") or ""))


def own() -> Interpreter:
    from harness.measure.metadata import python_build

    return Interpreter(label="", base=os.path.realpath(sys.executable), version=platform.python_version(),
                       build=python_build(), python=sys.executable)


def probe(path: str) -> Interpreter | None:
    """What ``path`` is, or None when it is not a CPython ≥ 3.11 that runs."""
    try:
        done = subprocess.run([path, "-I", "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=20)
        info = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not info or info["implementation"] != "CPython":
        return None
    if tuple(int(p) for p in re.findall(r"\d+", info["version"])[:2]) < MINIMUM:
        return None
    return Interpreter(label=info["version"], base=os.path.realpath(path), version=info["version"],
                       build=info["build"])


def _candidates() -> list[str]:
    """Pythons this machine has: pyenv's versions, the system's python3.X, any python3.X on PATH."""
    found: list[str] = []
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        found += [str(p / "bin" / "python3") for p in sorted(pyenv.iterdir()) if (p / "bin" / "python3").exists()]
    for minor in range(MINIMUM[1], 20):
        name = f"python3.{minor}"
        found += [str(Path(d) / name) for d in ("/usr/bin", "/usr/local/bin") if (Path(d) / name).exists()]
        on_path = shutil.which(name)
        if on_path and "shims" not in Path(on_path).parts:
            found.append(on_path)
    return found


def _identity(interpreter: Interpreter) -> tuple[str, str]:
    return interpreter.version, interpreter.build.get("executable") or interpreter.base


def discover() -> list[Interpreter]:
    """Every other CPython ≥ 3.11 found, oldest version first, labelled uniquely; the harness's own left out."""
    mine = own()
    seen = {_identity(mine)}
    found: list[Interpreter] = []
    for path in dict.fromkeys(os.path.realpath(p) for p in _candidates()):
        interpreter = probe(path)
        if interpreter is None or _identity(interpreter) in seen:
            continue
        seen.add(_identity(interpreter))
        found.append(interpreter)
    found.sort(key=lambda i: [int(p) for p in re.findall(r"\d+", i.version)])
    return _labelled(found)


def _labelled(interpreters: list[Interpreter]) -> list[Interpreter]:
    """Labels are versions; a second build of one version gets ``-2``, and so on."""
    result, taken = [], set()
    for interpreter in interpreters:
        label, n = interpreter.version, 1
        while label in taken:
            n += 1
            label = f"{interpreter.version}-{n}"
        taken.add(label)
        result.append(Interpreter(label=label, base=interpreter.base, version=interpreter.version,
                                  build=interpreter.build))
    return result


def resolve(asked: list[str]) -> list[Interpreter]:
    """``--python``'s entries (versions such as 3.12 or 3.12.1, or paths) as interpreters, in order."""
    mine, others = own(), discover()
    chosen: list[Interpreter] = []
    for entry in asked:
        if "/" in entry:
            found = probe(entry)
            if found is None:
                raise UsageError(f"--python {entry}: not a CPython {'.'.join(map(str, MINIMUM))} or newer that runs")
            if _identity(found) == _identity(mine):
                found = mine
            else:
                found = next((o for o in others if _identity(o) == _identity(found)), found)
        else:
            matches = [i for i in (mine, *others) if i.version == entry or i.version.startswith(entry + ".")]
            if not matches:
                have = ", ".join(i.version for i in (mine, *others))
                raise UsageError(f"--python {entry}: no such interpreter found (found: {have}); give a version "
                                 "this machine has, or a path to a python")
            found = matches[0]
        if found not in chosen:
            chosen.append(found)
    return chosen


def server_requirements() -> list[str]:
    """What a server process imports: pyproject's pins less the harness's tools, and every app's own."""
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    shared = [p for p in pins if re.split(r"[\[=<>!~ ]", p, maxsplit=1)[0].lower() not in HARNESS_ONLY]
    apps = [line.strip() for req in sorted(ROOT.glob("apps/*/requirements.txt"))
            for line in req.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return list(dict.fromkeys(shared + apps))


def pinned_requirements(app: Path, pins: tuple[str, ...]) -> list[str]:
    """One app's servers' packages with ``pins`` in place of the same packages' versions (a knob's): the shared
    server pins and that app's own, so no other app's pins can conflict."""
    def name(requirement: str) -> str:
        return re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    own = [line.strip() for line in (app / "requirements.txt").read_text().splitlines()
           if line.strip() and not line.lstrip().startswith("#")] if (app / "requirements.txt").is_file() else []
    wanted = {name(p): p for p in [*project, *own] if name(p) not in HARNESS_ONLY}
    wanted |= {name(p): p for p in pins}
    return list(wanted.values())


def pinned_label(cell: Any, knob: str) -> str:
    """The key of a cell's virtualenv for a knob with pins: its interpreter, app and knob."""
    return f"{cell.python or 'own'}+{cell.framework}+{knob}"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "insertbench" / "venvs"


def environment(interpreter: Interpreter, say=print, requirements: list[str] | None = None) -> Interpreter:
    """``interpreter`` with a virtualenv of the servers' packages (made once, reused), ready to serve; with
    ``requirements``, of those instead (a knob's pins), for the harness's own interpreter too."""
    if not interpreter.label and requirements is None:
        return interpreter
    requirements = requirements if requirements is not None else server_requirements()
    digest = hashlib.sha256(json.dumps([interpreter.base, interpreter.version, requirements]).encode()).hexdigest()
    venv = cache_dir() / f"{interpreter.version}-{digest[:12]}"
    python = venv / "bin" / "python"
    done = venv / ".insertbench-ready"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            say(f"making a virtualenv for Python {interpreter.version} ({interpreter.base}) in {venv}: "
                f"{len(requirements)} packages, once")
            shutil.rmtree(venv, ignore_errors=True)
            _run([interpreter.base, "-m", "venv", str(venv)],
                 f"Python {interpreter.version} at {interpreter.base} cannot make a virtualenv (on Debian: "
                 f"apt-get install python{'.'.join(interpreter.version.split('.')[:2])}-venv)")
            _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
                 f"installing the servers' packages into {venv} failed")
            done.write_text(json.dumps(requirements) + "\n")
    return Interpreter(label=interpreter.label, base=interpreter.base, version=interpreter.version,
                       build=interpreter.build, python=str(python))


def _run(argv: list[str], failure: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UsageError(f"{failure}: {' '.join(tail)}")
