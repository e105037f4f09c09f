"""Settings as frozen Structs, read from the environment once, in main().

Each field `x` of a settings Struct is read from `{PREFIX}_{X}` (upper case); NATS_URL and
LOG_LEVEL are shared by every worker. A bad value stops the worker at start with the
variable's name and what it must be, never later.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
from msgspec import Meta, Struct

from services.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["BusSettings", "SettingsError", "load"]

S = TypeVar("S", bound=Struct)


class SettingsError(StartupError, ValueError):
    """An environment variable holds a value its setting cannot take."""


class BusSettings(Struct, frozen=True, kw_only=True):
    url: str = "nats://127.0.0.1:4222"
    # the shortest wait between reconnect attempts, growing with jitter up to
    # reconnect_max_s (services/retry.py); attempts never stop (a worker outlives any outage)
    reconnect_wait_s: Annotated[float, Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 5.0  # if lower: reconnect_wait_s
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    # bytes of publishes buffered while disconnected
    pending_bytes: Annotated[int, Meta(gt=0)] = 8 * 1024 * 1024
    # the largest payload a worker decodes; larger ones are answered 400
    max_payload: Annotated[int, Meta(gt=0)] = 64 * 1024


def load(cls: type[S], prefix: str, env: Mapping[str, str] | None = None) -> S:
    """Build `cls` from `{prefix}_{FIELD}` variables; unset ones keep their defaults."""
    env = os.environ if env is None else env
    names = {f"{prefix}_{name.upper()}": name for name in cls.__struct_fields__}
    values = {names[k]: v for k, v in env.items() if k in names}
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        field = re.search(r"`\$\.(\w+)`", str(exc))
        if field is None:  # a rule across fields (a __post_init__): no one variable to name
            raise SettingsError(f"{prefix}_* settings: {exc}") from None
        var = f"{prefix}_{field[1].upper()}"
        raise SettingsError(f"{var}={values.get(field[1])!r}: {exc}") from None


def load_bus(env: Mapping[str, str] | None = None) -> BusSettings:
    """NATS_URL plus the NATS_* connection settings."""
    return load(BusSettings, "NATS", env)
