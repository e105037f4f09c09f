"""Every number, index, size, duration and flag of a request, parsed in one place.

Consul's rules, which the gateway's clients were written against:

    index, sizes    ASCII digits only (fullwidth, superscript or Arabic-Indic digits are refused,
                    though Python's `int()` takes some), no sign, at most an unsigned 64-bit value
                    (a size has its own, smaller bound)
    durations       Go's `time.ParseDuration` ("10s", "1m30s", "120000ms", "1.5h"; a bare
                    number is refused as Consul refuses it: "missing unit"), at most Go's
                    ~292 years; read for `wait=`, a check's `TTL` and
                    `DeregisterCriticalServiceAfter`
    flags           present and not "false", "0" or "no" (`?passing`, `?track=false`)

Anything else is a BadRequest that names the parameter and shows a valid value, so the
HTTP answer is a 400 with that sentence.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from services.errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_DURATION_S",
    "MAX_INDEX",
    "DurationError",
    "flag",
    "parse_duration",
    "parse_index",
    "parse_size",
]

MAX_INDEX: Final = 2**64 - 1  # Consul's indexes are uint64
MAX_DURATION_S: Final = (2**63 - 1) / 1e9  # Go's time.Duration: int64 nanoseconds
_MAX_TEXT: Final = 64  # longer than any duration or number a client means
_DIGITS: Final = re.compile(r"[0-9]+")
_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# [0-9], not \d: Python's \d matches every script's digits, Go's parser only ASCII
_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_FALSE: Final = frozenset({"false", "0", "no"})


class DurationError(BadRequest, ValueError):
    """Text that is not a Go duration; the message says what a valid one looks like."""


def _shown(text: str) -> str:
    """The value as the sentence quotes it: short, one line."""
    return repr(text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "...")


def parse_uint(text: str, name: str, *, maximum: int, means: str) -> int:
    """A whole number 0..maximum in ASCII digits; BadRequest naming `name` otherwise."""
    if len(text) > _MAX_TEXT or not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise BadRequest(
            f"{name} must be an integer 0..{maximum}, got {_shown(text)}: "
            f"a whole number in ASCII digits ({means})"
        )
    return int(text)


def parse_index(text: str, name: str = "index") -> int:
    """A Consul index (`?index=` of a blocking query): an X-Consul-Index, uint64."""
    return parse_uint(text, name, maximum=MAX_INDEX, means="an X-Consul-Index")


def parse_size(text: str, name: str, *, maximum: int) -> int:
    """A count or a page size (`?limit=`): 0..maximum."""
    return parse_uint(text, name, maximum=maximum, means="a count")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in a Go duration such as "1m30s"; raise DurationError with a sentence."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    if len(body) <= _MAX_TEXT:
        for part in _PART.finditer(body):
            if part.start() != pos:
                break
            total += float(part[1]) * _UNITS[part[2]]
            pos = part.end()
    if not body or pos != len(body):
        raise DurationError(
            f"{what} {_shown(text)} is not a duration; write a number with a unit, "
            'as Consul does: "10s", "1m30s", "500ms" (units ns, us, ms, s, m, h)'
        )
    if total > MAX_DURATION_S:
        raise DurationError(
            f"{what} {_shown(text)} is longer than Go's longest duration (about 292 years); "
            'write one such as "10s" or "5m"'
        )
    return sign * total


def flag(query: Mapping[str, str], name: str) -> bool:
    """`?name` present and not "false", "0" or "no" (any case)."""
    return name in query and query[name].lower() not in _FALSE
