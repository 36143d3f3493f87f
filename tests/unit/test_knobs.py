"""Applying knobs: the original app's source edited exactly once per edit, our apps' variables, the collector's
wrapper; which knobs a cell takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import axes
from harness.measure import knobs
from harness.measure.apps import discover

APPS = discover()


def test_every_edit_of_an_in_stack_knob_fits_the_original_app_once(tmp_path: Path) -> None:
    names = [n for n, k in axes.KNOBS.items() if k.patch and k.group != "response"] + ["response"]
    seed = APPS["seed"]
    served, env, roots = knobs.apply(seed, axes.knob_join(names), tmp_path)
    source = (tmp_path / f"{knobs.PATCHED_MODULE}.py").read_text()
    assert served.module == knobs.PATCHED_MODULE and roots == (tmp_path,) and env == {}
    assert 'isolation_level="AUTOCOMMIT"' in source and "pool_size=4," in source and "pool_pre_ping=True" in source
    assert '"postgresql+psycopg://"' in source and "return JSONResponse(" in source
    compile(source, "patched", "exec")
    original = Path(seed.root, *seed.module.split(".")).with_suffix(".py").read_text()
    assert original.count("\n") + 1 + 3 == source.count("\n") + 1  # three lines added, the rest edited in place


def test_an_edit_that_no_longer_fits_is_refused() -> None:
    with pytest.raises(knobs.KnobError, match="pool4.*occurs 0 times"):
        knobs.patched_source("engine = create_async_engine(dsn)\n", ("pool4",))


def test_our_apps_take_variables_and_any_app_takes_the_collector(tmp_path: Path) -> None:
    served, env, roots = knobs.apply(APPS["fastapi"], "autocommit+pool4+gcfreeze", tmp_path)
    assert env == {"BENCH_AUTOCOMMIT": "1", "BENCH_POOL_SIZE": "4", "BENCH_GC": "freeze",
                   "BENCH_GC_APP": "apps.fastapi.app:app"}
    assert served.module == knobs.GC_MODULE and (tmp_path / f"{knobs.GC_MODULE}.py").is_file()
    assert knobs.apply(APPS["asgi"], "", tmp_path / "none") == (APPS["asgi"], {}, ())


def test_a_cell_takes_a_knob_only_where_it_changes_something() -> None:
    fastapi, seed = APPS["fastapi"], APPS["seed"]
    assert fastapi.takes("autocommit", "core") and not fastapi.takes("autocommit", "asyncpg")
    assert not fastapi.takes("autocommit", "core", "each")  # N rows stay in one transaction
    assert seed.takes("autocommit+gcfreeze", "orm") and not seed.takes("transaction", "orm")
    assert not seed.takes("model", "orm")  # no edit of the published source for it
    assert not APPS["asgi"].takes("response", "asyncpg")  # FastAPI's only
    assert not axes.knob_fits("gcfreeze", "gcoff") and axes.knob_fits("gcfreeze", "autocommit")
    assert axes.knob_join(["gcfreeze", "autocommit"]) == "autocommit+gcfreeze"
