"""What a key may be: Consul's rules, and what fits a NATS subject token by token.

A key is `/`-separated UTF-8 text. It may not be empty (a prefix may), may not start with
`/` (Consul's API would read the rest as another path), may hold no control characters,
and is at most 512 bytes: each byte can cost three characters of a subject (%XX), and a
subject must fit the NATS protocol's control line.
"""

from __future__ import annotations

from typing import Final

from schemas.subjects import KV_KEY_RULE
from services.errors import BadRequest

__all__ = ["MAX_KEY_BYTES", "check_key", "check_prefix"]

MAX_KEY_BYTES: Final = 512


def _problem(key: str) -> str | None:
    if key.startswith("/"):
        return "starts with /"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"is {size} bytes long"
    bad = sorted({c for c in key if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0})
    if bad:
        return "contains the control character(s) " + " ".join(repr(c) for c in bad)
    return None


def _shown(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:77] + "...")


def check_key(key: str) -> str:
    """`key` if it may name a value, else BadRequest saying what is wrong."""
    problem = "is empty" if not key else _problem(key)
    if problem:
        raise BadRequest(f"key {_shown(key)} {problem}; {KV_KEY_RULE}")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` if keys may start with it ("" is every key), else BadRequest."""
    problem = _problem(prefix) if prefix else None
    if problem:
        raise BadRequest(f"prefix {_shown(prefix)} {problem}; {KV_KEY_RULE}")
    return prefix
