"""A DSN's password, in text: redacted wherever it is written, scrubbed from any message, never echoed."""

from __future__ import annotations

import pytest

from harness.measure.postgres import Database, PostgresError, normalise, redact, scrub


def test_redact_hides_a_password_in_the_query_string_too() -> None:
    assert redact("postgresql://u@h:5432/db?sslmode=off&password=s3cret") == (
        "postgresql://u@h:5432/db?sslmode=off&password=***")
    assert redact("PostgreSQL://u:s3cret@[::1]:5432/db?PASSWORD=x") == "postgresql://u:***@[::1]:5432/db?PASSWORD=***"


def test_scrub_removes_dsns_and_known_passwords_from_any_text() -> None:
    Database(dsn="postgresql://u:pa%24%24word-42@h/db", embedded=False)  # a DSN the process handles is remembered
    text = "error: cannot use 'postgresql://u:pa%24%24word-42@h/db' (password pa$$word-42 rejected)"
    assert scrub(text) == "error: cannot use 'postgresql://u:***@h/db' (password *** rejected)"


def test_the_scheme_is_normalised_and_anything_else_refused_without_echoing_it() -> None:
    assert normalise("PostgreSQL://u:pw@h/db") == "postgresql://u:pw@h/db"
    assert normalise("postgres://u:pw@h/db") == "postgresql://u:pw@h/db"
    with pytest.raises(PostgresError, match=r"mysql://u:\*\*\*@h/db"):
        normalise("mysql://u:pw@h/db")
    with pytest.raises(PostgresError, match="not a URL") as raised:
        normalise("host=h password=pw")
    assert "host=h" not in str(raised.value)
