"""What the collector writes: bus messages as InfluxDB line protocol. Pure functions.

Measurements (database / bucket `baton` by default); every point is tagged `service`:

- instance_load (tags instance, zone): beat (int 1), inflight (int), cpu, mem, latency_ms;
  one per heartbeat.
- calls (tags instance, zone, outcome): latency_ms, error (int 0/1); one per call report.
- picks (tags instance, strategy): count, weight (int); the balancer's per-interval counts.
- registry_events (tag kind): instance, text (str), count (int 1); for annotations.
- config_changes (tag kind): revision (int), actor, reason, text (str); for annotations.
- collector (tag node, no service): received, written, retried, dropped, rejected,
  buffered (int); the collector's own health.

`outcome` is `ok` or `error`. Timestamps are nanoseconds; each point gets a distinct one,
because InfluxDB keeps only the last of two points with the same series and time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from schemas.balancer import CallReport, PickCounts
    from schemas.governor import ConfigApplied
    from schemas.registry import Heartbeat, InstanceEvent

__all__ = ["Clock", "call", "collector_health", "config_change", "load", "picks", "registry_event"]

_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPE) if value else "none"  # an empty tag is not allowed


def _str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


class Clock:
    """Nanosecond timestamps, strictly increasing, so no two points share one."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = time.time_ns()
        self._last = now if now > self._last else self._last + 1
        return self._last


def load(service: str, hb: Heartbeat, zone: str, ts: int) -> str:
    fields = ["beat=1i"]  # a heartbeat with no load still says the instance is alive
    if hb.inflight is not None:
        fields.append(f"inflight={hb.inflight}i")
    for name in ("cpu", "mem", "latency_ms"):
        value = getattr(hb, name)
        if value is not None:
            fields.append(f"{name}={float(value)}")
    return (
        f"instance_load,service={_tag(service)},instance={_tag(hb.instance_id)},"
        f"zone={_tag(zone)} {','.join(fields)} {ts}"
    )


def call(service: str, report: CallReport, zone: str, ts: int) -> str:
    outcome = "ok" if report.ok else "error"
    return (
        f"calls,service={_tag(service)},instance={_tag(report.instance_id)},zone={_tag(zone)},"
        f"outcome={outcome} latency_ms={float(report.latency_ms)},error={int(not report.ok)}i {ts}"
    )


def picks(counts: PickCounts, ts: int) -> list[str]:
    return [
        f"picks,service={_tag(counts.service)},instance={_tag(p.instance_id)},"
        f"strategy={_tag(p.strategy)} count={p.count}i,weight={p.weight}i {ts}"
        for p in counts.picks
    ]


def registry_event(event: InstanceEvent, ts: int) -> str:
    iid = event.instance.instance_id
    return (
        f"registry_events,service={_tag(event.service)},kind={_tag(event.kind)} "
        f"instance={_str(iid)},text={_str(f'{iid} {event.kind}')},count=1i {ts}"
    )


def config_change(entry: ConfigApplied, ts: int) -> str:
    cfg = entry.config
    text = (
        f"rev {entry.revision} {entry.kind} by {entry.actor}: strategy={cfg.strategy} "
        f"threshold={cfg.protect_threshold:g} overrides={len(cfg.instances)}"
        + (f" ({entry.reason})" if entry.reason else "")
    )
    return (
        f"config_changes,service={_tag(entry.service)},kind={_tag(entry.kind)} "
        f"revision={entry.revision}i,actor={_str(entry.actor)},reason={_str(entry.reason)},"
        f"text={_str(text)} {ts}"
    )


def collector_health(node: str, stats: Mapping[str, int], ts: int) -> str:
    fields = ",".join(f"{k}={v}i" for k, v in sorted(stats.items()))
    return f"collector,node={_tag(node)} {fields} {ts}"
