"""Every nox session accepts the arguments the README's sessions table documents for it.

Each documented form (every optional part present or absent, each alternative of ``a | b``), with its
placeholders filled in, goes through the parser that the session hands its arguments to.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from harness.__main__ import parse
from harness.measure import floor

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"RUN_ID": "20261126-074143-6609ac1-e39d4f", "RUN_A": "20261125-004044-77a0ff3",
                "RUN_B": "20261125-015040-1156d22", "OPTIONS": "--quick"}
PARSERS = {  # what each session runs with its arguments
    "bench": lambda args: parse(["run", *args]),
    "docker": lambda args: parse(["run", *args]),  # docker/run.sh hands them to the harness in the container
    "report": lambda args: parse(["report", *args]),
    "compare": lambda args: parse(["compare", *args]),
    "floor": floor.parse,
}


def documented() -> dict[str, str]:
    """session → its arguments column, from the README's sessions table."""
    rows = re.findall(r"^\| `nox -s (\w+)` \| `([^`]*)`", (ROOT / "README.md").read_text(), re.MULTILINE)
    return {name: args.replace("\\|", "|") for name, args in rows}


def forms(text: str) -> list[list[str]]:
    """Every concrete argument list a form like ``[-- RUN_ID] [--readme | --no-readme]`` allows."""
    parts = re.findall(r"\[([^\]]*)\]|(\S+)", text)
    choices = []
    for optional, fixed in parts:
        if fixed:
            choices.append([fixed])
        else:
            choices.append(["", *(alt.strip() for alt in optional.split("|"))])
    found = []
    for combo in itertools.product(*choices):
        words = " ".join(c for c in combo if c).split()
        words = words[1:] if words[:1] == ["--"] else [w for w in words if w != "--"]
        found.append([PLACEHOLDERS.get(w, w) for w in words])
    return found


def test_the_table_documents_every_session_that_takes_harness_arguments() -> None:
    assert set(PARSERS) <= set(documented())


def test_forms_expand_every_optional_part_and_alternative() -> None:
    assert forms("[-- RUN_ID] [--readme | --no-readme]") == [
        [], ["--readme"], ["--no-readme"], [PLACEHOLDERS["RUN_ID"]], [PLACEHOLDERS["RUN_ID"], "--readme"],
        [PLACEHOLDERS["RUN_ID"], "--no-readme"]]


@pytest.mark.parametrize("session", sorted(PARSERS))
def test_each_documented_form_parses(session: str) -> None:
    for args in forms(documented()[session]):
        PARSERS[session](args)  # argparse exits on a form it refuses


def test_contradicting_readme_options_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["report", PLACEHOLDERS["RUN_ID"], "--readme", "--no-readme"])
