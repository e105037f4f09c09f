"""What the console shows, computed from the read model (pure: no I/O, a clock passed in).

An instance's state is the first of these that holds, with the sentence that says why:

    ejected   a balancer ejected it (until when, for what)
    drained   an operator drained it (the config's override, with its revision)
    critical  the registry marks it unhealthy (no heartbeat within its TTL)
    passing   it may take traffic

A service's row counts its instances by state; a history entry carries the settings that
changed from the revision before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from schemas.governor import ServiceConfig

if TYPE_CHECKING:
    from schemas.governor import ConfigApplied
    from schemas.registry import Instance
    from services.view import ServiceState

__all__ = ["STATES", "diff", "history_rows", "instance_row", "matches", "service_row", "state_of"]

State = Literal["passing", "critical", "drained", "ejected"]
STATES: Final[tuple[State, ...]] = ("passing", "critical", "drained", "ejected")


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def state_of(service: ServiceState, instance: Instance, now: float) -> tuple[State, str]:
    """The instance's state and the sentence that says why."""
    ejection = service.ejection(instance.instance_id)
    if ejection is not None:
        return "ejected", (
            f"ejected by the balancer until {_when(ejection.until)} "
            f"({ejection.reason}; ejection {ejection.times} in a row)"
        )
    if instance.drained:
        override = service.config.instances.get(instance.instance_id)
        by = (
            f" by config revision {service.config.revision}"
            if override is not None and override.drained
            else ""
        )
        return "drained", f"drained{by}: it takes no new traffic"
    if not instance.healthy:
        missed = now - instance.last_seen.timestamp()
        return "critical", (
            f"unhealthy: no heartbeat for {missed:.0f} s (its TTL is {instance.ttl_s:g} s)"
        )
    return "passing", "healthy and serving"


def instance_row(service: ServiceState, instance: Instance, now: float) -> dict[str, Any]:
    state, why = state_of(service, instance, now)
    override = service.config.instances.get(instance.instance_id)
    return {
        "instance_id": instance.instance_id,
        "address": f"{instance.host}:{instance.port}",
        "zone": instance.zone,
        "version": instance.version,
        "weight": service.weight(instance, now),  # in effect: warming up, maybe
        # the registry's (the registration's, or the config's override of it)
        "registered_weight": instance.weight,
        "override": msgspec.to_builtins(override) if override is not None else None,
        "state": state,
        "why": why,
        "metadata": dict(instance.metadata),
        "inflight": instance.inflight,
        "latency_ms": instance.latency_ms,
        "last_seen": instance.last_seen.isoformat(timespec="seconds"),
        "ttl_s": instance.ttl_s,
    }


def service_row(service: ServiceState, now: float) -> dict[str, Any]:
    counts = dict.fromkeys(STATES, 0)
    for instance in service.instances.values():
        counts[state_of(service, instance, now)[0]] += 1
    return {
        "service": service.name,
        "instances": len(service.instances),
        "counts": counts,
        "strategy": service.config.strategy,
        "panic": service.panic,
        "revision": service.config.revision,
    }


def matches(service: ServiceState, now: float, **wanted: str) -> bool:
    """The overview's filters: `name` (a substring), `tag` (a metadata key or key=value),
    `zone`, `state`; an empty one matches everything."""
    name, tag, zone, state = (wanted.get(k, "") for k in ("name", "tag", "zone", "state"))
    if name and name not in service.name:
        return False
    instances = list(service.instances.values())
    if zone:
        instances = [i for i in instances if i.zone == zone]
    if tag:
        key, sep, value = tag.partition("=")
        instances = [
            i for i in instances if key in i.metadata and (not sep or i.metadata[key] == value)
        ]
    if state:
        instances = [i for i in instances if state_of(service, i, now)[0] == state]
    return bool(instances) if (zone or tag or state) else True


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flat(value[key], f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings that differ, as `{setting, before, after}` (dotted paths; None = absent)."""
    old, new = _flat(before or {}), _flat(after)
    return [
        {"setting": key, "before": old.get(key), "after": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if key != "revision" and old.get(key) != new.get(key)
    ]


def history_rows(entries: list[ConfigApplied]) -> list[dict[str, Any]]:
    """Every revision, newest first, with who, why, when and its diff against the one before
    (the first one's against the defaults)."""
    rows: list[dict[str, Any]] = []
    before: dict[str, Any] | None = None
    for entry in sorted(entries, key=lambda e: e.revision):
        if before is None:  # the first against the defaults: what the operators changed
            before = msgspec.to_builtins(ServiceConfig(service=entry.service))
        config = msgspec.to_builtins(entry.config)
        rows.append(
            {
                "revision": entry.revision,
                "actor": entry.actor,
                "reason": entry.reason,
                "at": entry.at.isoformat(timespec="seconds"),
                "kind": entry.kind,
                "restored": entry.restored,
                "changes": diff(before, config),
            }
        )
        before = config
    rows.reverse()
    return rows
