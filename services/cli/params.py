"""Arguments checked before anything is sent: a bad one is a usage error (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from schemas.subjects import InvalidNameError, check_name

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["instance_ids", "key_values", "service_name"]

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
