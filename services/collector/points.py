"""What the collector writes: bus messages as InfluxDB line protocol. Pure functions.

Measurements (database / bucket `baton` by default); every point is tagged `service`:

- instance_load (tags instance, zone): beat (int 1), inflight (int), cpu, mem, latency_ms;
  one per heartbeat.
- calls (tags instance, zone, outcome): latency_ms, error (int 0/1); one per call report.
- picks (tags instance, strategy): count, weight (int); the balancer's per-interval counts.
- registry_events (tag kind): instance, text (str), count (int 1); for annotations.
- config_changes (tag kind): revision (int), actor, reason, text (str); for annotations.
- outlier_events (tag kind `ejected`/`returned`): instance, reason, text (str), until_s
  (float, Unix seconds), ejections, ejected, count (int 1); the balancer's ejections.
- check_results (tags instance, check, status): code (int 0 passing, 1 warning,
  2 critical), duration_ms, transition (int 0/1); one per run of an active check.
- check_transitions (tags kind = the new status): instance, check, previous, output, text
  (str), count (int 1); one per change of a check's status, for tables and annotations.
- collector (tag node, no service): received, written, retried, dropped, rejected,
  buffered (int); the collector's own health.

`outcome` is `ok` or `error`. Timestamps are nanoseconds; each point gets a distinct one,
because InfluxDB keeps only the last of two points with the same series and time.

`Lines` builds the two per-message measurements (calls, instance_load) as the functions do,
with each series' escaped tags cached: the collector's hot path.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from schemas.fields import NAME_PATTERN

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from schemas.balancer import BatchedReport, CallReport, OutlierEvent, PickCounts
    from schemas.checks import CheckResult
    from schemas.governor import ConfigApplied
    from schemas.registry import Heartbeat, InstanceEvent

__all__ = [
    "Clock",
    "Lines",
    "call",
    "check_result",
    "collector_health",
    "config_change",
    "load",
    "outlier_event",
    "picks",
    "registry_event",
]

_NAME = re.compile(NAME_PATTERN)
_TAG_ESCAPE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_OK = ",error=0i "  # a call's fields after its latency, and the space before the time
_ERROR = ",error=1i "


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

    def reserve(self, n: int) -> int:
        """The first of `n` consecutive timestamps, all after any given before."""
        now = time.time_ns()
        first = now if now > self._last else self._last + 1
        self._last = first + max(0, n - 1)
        return first


def _load_head(service: str, instance_id: str, zone: str) -> str:
    # a heartbeat with no load still says the instance is alive: beat=1i
    return (
        f"instance_load,service={_tag(service)},instance={_tag(instance_id)},"
        f"zone={_tag(zone)} beat=1i"
    )


def _load_fields(hb: Heartbeat) -> str:
    fields = "" if hb.inflight is None else f",inflight={hb.inflight}i"
    if hb.cpu is not None:
        fields += f",cpu={float(hb.cpu)}"
    if hb.mem is not None:
        fields += f",mem={float(hb.mem)}"
    if hb.latency_ms is not None:
        fields += f",latency_ms={float(hb.latency_ms)}"
    return fields


def load(service: str, hb: Heartbeat, zone: str, ts: int) -> str:
    return f"{_load_head(service, hb.instance_id, zone)}{_load_fields(hb)} {ts}"


def _call_head(service: str, instance_id: str, zone: str, *, ok: bool) -> str:
    """A call's line up to its latency: the tags, outcome, and `latency_ms=`."""
    return (
        f"calls,service={_tag(service)},instance={_tag(instance_id)},zone={_tag(zone)},"
        f"outcome={'ok' if ok else 'error'} latency_ms="
    )


def call(service: str, report: CallReport, zone: str, ts: int) -> str:
    head = _call_head(service, report.instance_id, zone, ok=report.ok)
    return f"{head}{float(report.latency_ms)}{_OK if report.ok else _ERROR}{ts}"


class Lines:
    """`call` and `load` with each series' head (measurement and escaped tags) cached.

    Escaping and formatting the tags costs more than the rest of a line, and a fleet has
    few series, so each head is built once. The cache holds up to `size` heads a
    measurement and starts over when full: a churning fleet costs a rebuild, not memory.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._calls: dict[tuple[str, str, str, bool], str] = {}
        self._loads: dict[tuple[str, str, str], str] = {}

    def call(self, service: str, report: CallReport, zone: str, ts: int) -> str:
        ok = report.ok
        key = (service, report.instance_id, zone, ok)
        head = self._calls.get(key)
        if head is None:
            if len(self._calls) >= self.size:
                self._calls.clear()
            head = self._calls[key] = _call_head(service, report.instance_id, zone, ok=ok)
        # float(): a Millis field may hold an int when the Struct was built in Python
        return f"{head}{float(report.latency_ms)}{_OK if ok else _ERROR}{ts}"

    def calls(
        self,
        service: str,
        reports: Iterable[BatchedReport],
        zones: Mapping[tuple[str, str], str],
        ts: int,
    ) -> tuple[list[str], list[str]]:
        """`call` for a batch of one service's reports, stamped ts, ts + 1, ...: each
        instance's head is looked up once a batch. Returns the lines, and the ids that
        break the name rule (their reports are left out: checked once per new series)."""
        heads: dict[tuple[str, bool], str] = {}
        out = []
        bad: list[str] = []
        for r in reports:
            ok = r.ok
            head = heads.get((r.instance_id, ok))
            if head is None:
                zone = zones.get((service, r.instance_id), "")
                key = (service, r.instance_id, zone, ok)
                head = self._calls.get(key)
                if head is None:
                    if not _NAME.fullmatch(r.instance_id):
                        bad.append(r.instance_id)
                        continue
                    if len(self._calls) >= self.size:
                        self._calls.clear()
                    head = self._calls[key] = _call_head(service, r.instance_id, zone, ok=ok)
                heads[r.instance_id, ok] = head
            out.append(f"{head}{float(r.latency_ms)}{_OK if ok else _ERROR}{ts}")
            ts += 1
        return out, bad

    def load(self, service: str, hb: Heartbeat, zone: str, ts: int) -> str:
        key = (service, hb.instance_id, zone)
        head = self._loads.get(key)
        if head is None:
            if len(self._loads) >= self.size:
                self._loads.clear()
            head = self._loads[key] = _load_head(service, hb.instance_id, zone)
        return f"{head}{_load_fields(hb)} {ts}"


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


def outlier_event(event: OutlierEvent, ts: int) -> str:
    iid = event.instance_id
    if event.kind == "ejected":
        text = f"{iid} ejected until {event.until:%H:%M:%S}: {event.reason}"
    else:
        text = f"{iid} returned"
    return (
        f"outlier_events,service={_tag(event.service)},kind={_tag(event.kind)} "
        f"instance={_str(iid)},reason={_str(event.reason)},text={_str(text)},"
        f"until_s={event.until.timestamp()},ejections={event.ejections}i,"
        f"ejected={event.ejected}i,count=1i {ts}"
    )


def collector_health(node: str, stats: Mapping[str, int], ts: int) -> str:
    fields = ",".join(f"{k}={v}i" for k, v in sorted(stats.items()))
    return f"collector,node={_tag(node)} {fields} {ts}"


_CODE = {"passing": 0, "warning": 1, "critical": 2}


def check_result(service: str, result: CheckResult, ts: int) -> list[str]:
    """One run of an active check; and its transition, when its status changed."""
    changed = result.previous is not None and result.previous != result.status
    tags = (
        f"service={_tag(service)},instance={_tag(result.instance_id)},check={_tag(result.check_id)}"
    )
    run = (
        f"check_results,{tags},status={_tag(result.status)} code={_CODE[result.status]}i,"
        f"duration_ms={float(result.duration_ms)},transition={int(changed)}i {ts}"
    )
    lines = [run]
    if changed:
        text = f"{result.instance_id} {result.check_id}: {result.previous} -> {result.status}"
        lines.append(
            f"check_transitions,service={_tag(service)},kind={_tag(result.status)} "
            f"instance={_str(result.instance_id)},check={_str(result.check_id)},"
            f"previous={_str(result.previous or '')},output={_str(result.output[:512])},"
            f"text={_str(text)},count=1i {ts + 1}"
        )
    return lines
