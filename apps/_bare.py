"""What the two bare apps (``asgi`` and ``rsgi``) share: the contract's checks of a parsed body, done by hand.

A text is a string of 1-1000 characters that PostgreSQL can store; a list of texts has 1-100 of them. Reading the
request and writing the answer are each interface's own (``apps/asgi``, ``apps/rsgi``).
"""

import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

MAX_BODY_SIZE = 1024 * 1024

# json accepts a lone surrogate ("\ud800"), which is no text PostgreSQL can store; pydantic and msgspec refuse it.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_text(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 1000 and (value.isascii() or not SURROGATE.search(value))


async def create_item(data: Any, insert: Callable[[str], Awaitable[int]]) -> tuple[int, dict]:
    text = data.get("text") if isinstance(data, dict) else None
    if not is_text(text):
        return 422, {"detail": 'expected {"text": a string of 1-1000 characters}'}
    return 201, {"id": await insert(text)}


async def create_items(data: Any, insert: Callable[[list[str]], Awaitable[list[int]]]) -> tuple[int, dict]:
    texts = data.get("texts") if isinstance(data, dict) else None
    if not (isinstance(texts, list) and 1 <= len(texts) <= 100 and all(map(is_text, texts))):
        return 422, {"detail": 'expected {"texts": 1-100 strings of 1-1000 characters}'}
    return 201, {"ids": await insert(texts)}


def routes(layer: Any) -> dict[tuple[str, str], Callable[[Any], Awaitable[tuple[int, dict]]]]:
    """(method, path) → the handler of a parsed body, writing through ``layer``."""
    return {
        ("POST", "/items"): partial(create_item, insert=layer.insert_one),
        ("POST", "/items/bulk"): partial(create_items, insert=layer.insert_many),  # one statement
        ("POST", "/items/each"): partial(create_items, insert=layer.insert_each),  # one statement per row
    }


def query_text(query: str) -> str | None:
    """``text`` from a decoded query string, or None when it is missing, repeated or not UTF-8 once unquoted."""
    try:
        values = parse_qs(query, errors="strict").get("text") or []
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if len(values) == 1 else None
