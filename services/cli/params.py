"""Arguments checked before anything is sent: a bad one is a usage error (exit 2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from schemas.subjects import InvalidNameError, check_name

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["instance_ids", "key_values", "parse_since", "service_name", "since"]

Callback = Callable[[click.Context, click.Parameter, Any], Any]


def _names(what: str) -> Callback:
    """A click callback that checks a name, or each of several, by the contract's rule."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        for name in [value] if isinstance(value, str) else list(value or ()):
            try:
                check_name(name, what)
            except InvalidNameError as exc:
                raise click.BadParameter(str(exc), ctx, param) from None
        return value

    return check


service_name = _names("service name")
instance_ids = _names("instance id")  # one, or each of a `multiple` option


def key_values(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE ...` as a dict (a click callback); the value may be empty, the key not."""
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx, param)
        pairs[key] = value
    return pairs


_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_HELP = "a revision (42), a duration ago (30m, 12h, 7d) or a time (2026-01-02T03:04:05Z)"


def parse_since(text: str, now: datetime) -> int | datetime:
    """`--since`: a revision number, a duration before `now`, or an ISO 8601 time (UTC
    unless it gives its offset)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    ago = _AGO.fullmatch(text)
    if ago:
        return now - timedelta(seconds=float(ago[1]) * _UNIT_S[ago[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {SINCE_HELP}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def since(ctx: click.Context, param: click.Parameter, value: str | None) -> int | datetime | None:
    """A click callback for `--since`."""
    if value is None:
        return None
    try:
        return parse_since(value, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
