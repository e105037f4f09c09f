"""Governor messages of the v1 wire contract: config changes, their history, rollback.

Fields beyond the contract are marked "extension"; old senders and readers ignore them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType, field

from schemas.balancer import DEFAULT_STRATEGY
from schemas.fields import (
    Actor,
    InstanceId,
    Metadata,
    Port,
    Reason,
    Revision,
    Seconds,
    Share,
    Weight,
)

__all__ = [
    "ConfigApplied",
    "ConfigChange",
    "ConfigHistory",
    "HistoryQuery",
    "InstanceOverride",
    "OverridePatch",
    "Rollback",
    "ServiceConfig",
]


class InstanceOverride(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """What an operator set for one instance; None = not overridden.

    `metadata` is merged over what the instance registered (the override wins per key).
    """

    weight: Weight | None = None
    drained: bool | None = None
    port: Port | None = None
    metadata: Metadata | None = None


class OverridePatch(Struct, frozen=True, kw_only=True, gc=False):
    """An override as a ConfigChange carries it: a field left out keeps its value, a field
    set to null removes that override."""

    weight: Weight | UnsetType | None = UNSET
    drained: bool | UnsetType | None = UNSET
    port: Port | UnsetType | None = UNSET
    metadata: Metadata | UnsetType | None = UNSET


class ServiceConfig(Struct, frozen=True, kw_only=True, gc=False):
    service: str
    revision: int = 0
    strategy: str = DEFAULT_STRATEGY
    protect_threshold: float = 0.0
    instances: dict[str, InstanceOverride] = field(default_factory=dict)
    # extension: ramp a newly registered instance's weight up over this many seconds
    warmup_s: float = 0.0


class ConfigChange(Struct, frozen=True, kw_only=True, gc=False):
    actor: Actor
    reason: Reason = ""
    expected_revision: Revision | None = None
    strategy: str | None = None  # checked by the governor so the error lists the names
    protect_threshold: Share | None = None
    instances: dict[InstanceId, OverridePatch | None] | None = None
    delete: bool = False
    warmup_s: Seconds | None = None  # extension


ChangeKind = Literal["change", "rollback", "delete"]


class ConfigApplied(Struct, frozen=True, kw_only=True, gc=False):
    service: str
    revision: int
    config: ServiceConfig
    actor: str
    reason: str
    at: datetime
    # extensions: what made this revision, and for a rollback, the revision it restored
    kind: ChangeKind = "change"
    restored: int | None = None


class HistoryQuery(Struct, frozen=True, kw_only=True, gc=False):
    """Extension: which revisions `governor.v1.history` answers with (an empty payload: all
    that fit in one reply, newest kept)."""

    limit: Annotated[int, Meta(ge=0, le=100_000)] = 0  # only the newest `limit` (0: no limit)
    since_revision: Revision = 0  # only revisions >= this
    # only changes applied at or after this time (RFC 3339, with its offset)
    since: Annotated[datetime, Meta(tz=True)] | None = None


class ConfigHistory(Struct, frozen=True, kw_only=True, gc=False):
    service: str
    entries: list[ConfigApplied]


class Rollback(Struct, frozen=True, kw_only=True, gc=False):
    actor: Actor
    to_revision: Revision
    reason: Reason = ""
    expected_revision: Revision | None = None  # extension: as in ConfigChange
