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
    "OutlierConfig",
    "OutlierPatch",
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


# Outlier ejection's ranges; `schemas.fields.RULES` says each in words.
Failures = Annotated[int, Meta(ge=1, le=1000)]
SweepSeconds = Annotated[float, Meta(ge=0.05, le=3600)]
EjectSeconds = Annotated[float, Meta(ge=0.05, le=86400)]
Percent = Annotated[float, Meta(ge=0, le=100)]


class OutlierConfig(Struct, frozen=True, kw_only=True, gc=False):
    """Extension: how the balancer ejects failing instances (Envoy's outlier detection).

    An instance with `consecutive_failures` failed calls in a row, or (with `success_rate`,
    at least 5 instances of 100 calls each in one interval) a success rate below the
    mean - 1.9 standard deviations, gets no picks for `base_ejection_s` x its ejections
    in a row (at most `max_ejection_s`; the count falls by one per healthy `interval_s`).
    At most `max_ejected_percent` of the instances are ejected at once, but at least one.
    With `probation`, a returned instance whose call fails before one succeeds (calls
    started since its return) is ejected again at once (Finagle's failure accrual).
    """

    enabled: bool = True
    consecutive_failures: Failures = 5
    interval_s: SweepSeconds = 10.0
    base_ejection_s: EjectSeconds = 30.0
    max_ejection_s: EjectSeconds = 300.0
    max_ejected_percent: Percent = 10.0
    success_rate: bool = True
    probation: bool = True  # a returned instance's first failure before a success re-ejects


class OutlierPatch(Struct, frozen=True, kw_only=True, gc=False):
    """Outlier settings as a ConfigChange carries them: a field left out keeps its value."""

    enabled: bool | UnsetType = UNSET
    consecutive_failures: Failures | UnsetType = UNSET
    interval_s: SweepSeconds | UnsetType = UNSET
    base_ejection_s: EjectSeconds | UnsetType = UNSET
    max_ejection_s: EjectSeconds | UnsetType = UNSET
    max_ejected_percent: Percent | UnsetType = UNSET
    success_rate: bool | UnsetType = UNSET
    probation: bool | UnsetType = UNSET


class ServiceConfig(Struct, frozen=True, kw_only=True, gc=False):
    service: str
    revision: int = 0
    strategy: str = DEFAULT_STRATEGY
    protect_threshold: float = 0.0
    instances: dict[str, InstanceOverride] = field(default_factory=dict)
    # extension: ramp a newly registered instance's weight up over this many seconds
    warmup_s: float = 0.0
    outlier: OutlierConfig = field(default_factory=OutlierConfig)  # extension


class ConfigChange(Struct, frozen=True, kw_only=True, gc=False):
    actor: Actor
    reason: Reason = ""
    expected_revision: Revision | None = None
    strategy: str | None = None  # checked by the governor so the error lists the names
    protect_threshold: Share | None = None
    instances: dict[InstanceId, OverridePatch | None] | None = None
    delete: bool = False
    warmup_s: Seconds | None = None  # extension
    outlier: OutlierPatch | None = None  # extension


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
