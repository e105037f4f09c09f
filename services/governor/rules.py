"""What makes a config change valid, and what it does to a config. Pure functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import UNSET

from schemas.balancer import STRATEGIES
from schemas.governor import (
    ConfigChange,
    InstanceOverride,
    OutlierConfig,
    OutlierPatch,
    OverridePatch,
    ServiceConfig,
)
from services.errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MAX_OVERRIDES", "apply_change", "check_change"]

MAX_OVERRIDES = 10_000  # instance overrides per service


def check_change(change: ConfigChange) -> None:
    """Raise BadRequest, with what to fix, for a change that must not be applied."""
    if change.strategy is not None and change.strategy not in STRATEGIES:
        raise BadRequest(
            f"unknown strategy {change.strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    sets = [
        name
        for name in ("strategy", "protect_threshold", "instances", "warmup_s", "outlier")
        if getattr(change, name) is not None
    ]
    if change.delete and sets:
        raise BadRequest(f"delete stands alone; send {', '.join(sets)} in another change")
    if not change.delete and not sets:
        raise BadRequest(
            "the change sets nothing; give strategy, protect_threshold, instances, "
            "warmup_s, outlier or delete"
        )


def _patched(current: InstanceOverride | None, patch: OverridePatch) -> InstanceOverride | None:
    fields = msgspec.structs.asdict(current) if current else {}
    for name in OverridePatch.__struct_fields__:
        value = getattr(patch, name)
        if value is not UNSET:
            fields[name] = value  # None removes the override
    merged = InstanceOverride(**fields)
    return merged if merged != InstanceOverride() else None


def _outlier(current: OutlierConfig, patch: OutlierPatch | None) -> OutlierConfig:
    """The outlier settings after `patch`: a field left out keeps its value."""
    if patch is None:
        return current
    fields = {
        name: getattr(patch, name)
        for name in OutlierPatch.__struct_fields__
        if getattr(patch, name) is not UNSET
    }
    merged = msgspec.structs.replace(current, **fields)
    if merged.max_ejection_s < merged.base_ejection_s:
        raise BadRequest(
            f"max_ejection_s ({merged.max_ejection_s:g}) must be at least base_ejection_s "
            f"({merged.base_ejection_s:g}); raise max_ejection_s or lower base_ejection_s"
        )
    return merged


def _merge(
    current: Mapping[str, InstanceOverride],
    patches: Mapping[str, OverridePatch | None],
) -> dict[str, InstanceOverride]:
    merged = dict(current)
    for instance_id, patch in patches.items():
        override = None if patch is None else _patched(merged.get(instance_id), patch)
        if override is None:
            merged.pop(instance_id, None)
        else:
            merged[instance_id] = override
    if len(merged) > MAX_OVERRIDES:
        raise BadRequest(
            f"a service may have at most {MAX_OVERRIDES} instance overrides, this change "
            f"would make {len(merged)}; drop some with null first"
        )
    return merged


def apply_change(current: ServiceConfig, change: ConfigChange, revision: int) -> ServiceConfig:
    """The config after `change`, as revision `revision` (a delete restores the defaults)."""
    if change.delete:
        return ServiceConfig(service=current.service, revision=revision)
    return msgspec.structs.replace(
        current,
        revision=revision,
        strategy=current.strategy if change.strategy is None else change.strategy,
        protect_threshold=(
            current.protect_threshold
            if change.protect_threshold is None
            else change.protect_threshold
        ),
        warmup_s=current.warmup_s if change.warmup_s is None else change.warmup_s,
        outlier=_outlier(current.outlier, change.outlier),
        instances=(
            current.instances
            if change.instances is None
            else _merge(current.instances, change.instances)
        ),
    )
