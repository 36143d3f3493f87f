"""Applying a cell's knobs (``axes.KNOBS``) to the app a server is about to serve.

Three ways, whichever the knob and the app take. Our apps read the knob's variables (``Knob.env``) from the
server's environment. The original app reads none (it is published code, ``PUBLISHED = True``): its source is
copied with the knob's edits (``Knob.patch``, each replaced exactly once) into the server's temporary folder
and served from there, so what runs is the published code with that change and nothing else. A garbage
collector knob (``Knob.gc``) needs no code at all: the server imports a small module that imports the app,
then freezes the collector's objects and raises its threshold, or switches it off; a user's own app (--app)
takes those the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness import axes
from harness.measure.apps import App

GC_MODULE = "insertbench_gc"
PATCHED_MODULE = "insertbench_patched"
GC_SOURCE = '''"""insertbench's garbage collector knob: import the app, then tune the collector (BENCH_GC)."""
import gc
import importlib
import os

_module, _, _attr = os.environ["BENCH_GC_APP"].partition(":")
{attr} = getattr(importlib.import_module(_module), _attr)
if os.environ["BENCH_GC"] == "freeze":
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
else:
    gc.disable()
'''


class KnobError(ValueError):
    """A knob cannot be applied: an edit's text is not in the source once."""


def patched_source(source: str, names: tuple[str, ...]) -> str:
    """``source`` with every edit of the named knobs applied in order; each edit's text must occur once."""
    for name in names:
        for old, new in axes.KNOBS[name].patch:
            if source.count(old) != 1:
                raise KnobError(f"knob {name}: {old!r} occurs {source.count(old)} times in the app's source, "
                                "not once; the knob's edit no longer fits the app")
            source = source.replace(old, new)
    return source


def apply(app: App, knob: str, folder: Path) -> tuple[App, dict[str, str], tuple[Path, ...]]:
    """The app to serve, the variables to set and the import roots to prepend for ``knob`` on ``app``."""
    names = axes.knob_names(knob)
    env: dict[str, str] = {}
    roots: list[Path] = []
    if app.published and any(axes.KNOBS[n].patch for n in names):
        module_file = Path(app.root, *app.module.split(".")).with_suffix(".py")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{PATCHED_MODULE}.py").write_text(patched_source(module_file.read_text(), names))
        app = dataclasses.replace(app, module=PATCHED_MODULE)
        roots.append(folder)
    elif not app.published:
        for name in names:
            env.update(axes.KNOBS[name].env)
    gc = [axes.KNOBS[n].gc for n in names if axes.KNOBS[n].gc]
    if gc:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{GC_MODULE}.py").write_text(GC_SOURCE.format(attr=app.attr))
        env |= {"BENCH_GC": gc[0], "BENCH_GC_APP": f"{app.module}:{app.attr}"}
        app = dataclasses.replace(app, module=GC_MODULE)
        roots.append(folder)
    return app, env, tuple(dict.fromkeys(roots))
