"""Consul's duration syntax (Go's `time.ParseDuration`): "10s", "1m30s", "120000ms".

Consul reads `wait=`, a check's `TTL` and `DeregisterCriticalServiceAfter` this way, so
the gateway does too; a bare number is refused as Consul refuses it ("missing unit").
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DurationError", "parse_duration"]

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
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """Text that is not a Go duration; the message says what a valid one looks like."""


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in a Go duration such as "1m30s"; raise DurationError with a sentence."""
    body = text.strip()
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for part in _PART.finditer(body):
        if part.start() != pos:
            break
        total += float(part[1]) * _UNITS[part[2]]
        pos = part.end()
    if not body or pos != len(body):
        raise DurationError(
            f"{what} {text!r} is not a duration; write a number with a unit, "
            'as Consul does: "10s", "1m30s", "500ms" (units ns, us, ms, s, m, h)'
        )
    return sign * total
