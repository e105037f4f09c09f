"""Text for people: aligned tables, key-value blocks, ages, and one line per event.

Times are shown in UTC, as the workers log and store them. Scripts use `--json` instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from schemas.balancer import Ejections, Endpoint, OutlierEvent
    from schemas.governor import (
        ConfigApplied,
        ConfigHistory,
        InstanceOverride,
        OutlierConfig,
        ServiceConfig,
    )
    from schemas.registry import Instance, InstanceEvent, InstanceList, ServiceList

__all__ = [
    "age",
    "applied",
    "applied_line",
    "checks",
    "config",
    "ejections",
    "endpoint",
    "event_line",
    "history",
    "instances",
    "never_configured",
    "outlier_line",
    "services",
    "table",
]

_GAP = "  "


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; no trailing spaces."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        _GAP.join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _pairs(rows: Iterable[tuple[str, str]]) -> str:
    rows = list(rows)
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}{_GAP}{value}" for key, value in rows)


def age(then: datetime, now: datetime) -> str:
    """How long ago, coarsely: 0.4s, 12s, 3m05s, 2h10m, 3d04h."""
    s = max(0.0, (now - then).total_seconds())
    if s < 10:
        return f"{s:.1f}s"
    whole = int(s)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _number(value: float) -> str:
    return f"{value:g}"


def _metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(metadata.items()))


# -- registry ----------------------------------------------------------------------------
def services(reply: ServiceList) -> str:
    return "\n".join(reply.services) if reply.services else "(no services registered)"


def instances(
    reply: InstanceList, now: datetime | None = None, *, ejections: Ejections | None = None
) -> str:
    """The instances table; with the balancer's `ejections`, an EJECTED column too."""
    now = now or datetime.now(UTC)
    header = ("INSTANCE", "ADDRESS", "ZONE", "WEIGHT", "HEALTHY", "DRAINED", "INFLIGHT", "SEEN")
    until = {e.instance_id: e.until for e in ejections.ejected} if ejections else {}
    held = set(ejections.held) if ejections else set()

    def ejected(iid: str) -> str:
        if ejections is None:
            return "?"
        if iid in until:
            return "until " + _clock(until[iid])
        return "no (cap)" if iid in held else "no"

    rows = [
        (
            i.instance_id,
            _address(i.host, i.port),
            i.zone or "-",
            str(i.weight),
            _yes(i.healthy),
            _yes(i.drained),
            str(i.inflight),
            age(i.last_seen, now) + " ago",
            ejected(i.instance_id),
            _checks_cell(i),
        )
        for i in sorted(reply.instances, key=lambda i: i.instance_id)
    ]
    return table((*header, "EJECTED", "CHECKS"), rows)


def _checks_cell(i: Instance) -> str:
    """`-` without active checks, else the worst status and how many of them pass."""
    if not i.check_states:
        return "-"
    passing = sum(s.status == "passing" for s in i.check_states)
    return f"{i.health} ({passing}/{len(i.check_states)} passing)"


def _one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def checks(reply: InstanceList, now: datetime | None = None) -> str:
    """Every active check of the service's instances: its status and last output."""
    now = now or datetime.now(UTC)
    rows = []
    for i in sorted(reply.instances, key=lambda i: i.instance_id):
        states = {s.check_id: s for s in i.check_states}
        for check in i.checks:
            if check.kind == "ttl":
                continue
            state = states.get(check.check_id)
            updated = state.updated_at if state is not None else None
            rows.append(
                (
                    i.instance_id,
                    check.check_id,
                    check.kind,
                    check.target,
                    f"{check.interval_s:g}s",
                    state.status if state is not None else check.status,
                    age(updated, now) + " ago" if updated is not None else "never run",
                    _one_line(state.output) if state is not None and state.output else "-",
                )
            )
    if not rows:
        return f"(no active checks: {reply.service}'s instances registered none)"
    header = ("INSTANCE", "CHECK", "KIND", "TARGET", "EVERY", "STATUS", "UPDATED", "OUTPUT")
    return table(header, rows)


def event_line(event: InstanceEvent) -> str:
    i = event.instance
    flags = [*(["drained"] if i.drained else []), *([] if i.healthy else ["unhealthy"])]
    state = " ".join([f"weight={i.weight}", *flags])
    return _GAP.join(
        (
            _clock(event.at),
            event.service,
            event.kind,
            i.instance_id,
            _address(i.host, i.port),
            state,
        )
    )


# -- balancer ----------------------------------------------------------------------------
def ejections(reply: Ejections) -> str:
    cap = f"at most {reply.max_ejected} ejected at once"
    if not reply.ejected:
        lines = [f"(no instance of {reply.service} is ejected; {cap})"]
    else:
        header = ("INSTANCE", "SINCE", "UNTIL", "EJECTIONS", "REASON")
        rows = [
            (e.instance_id, _clock(e.since), _clock(e.until), str(e.ejections), e.reason)
            for e in reply.ejected
        ]
        lines = [table(header, rows), f"({cap})"]
    if reply.held:
        lines.append(f"kept serving by the cap, though failing: {', '.join(reply.held)}")
    return "\n".join(lines)


def outlier_line(event: OutlierEvent) -> str:
    until = "until " + _clock(event.until) if event.kind == "ejected" else "back"
    return _GAP.join(
        (_clock(event.at), event.service, event.kind, event.instance_id, until, event.reason)
    )


def endpoint(ep: Endpoint) -> str:
    panic = "yes: too few healthy instances, unhealthy ones may be picked" if ep.panic else "no"
    return _pairs(
        [
            ("instance", ep.instance_id),
            ("address", _address(ep.host, ep.port)),
            ("zone", ep.zone or "-"),
            ("strategy", ep.strategy),
            ("panic", panic),
        ]
    )


# -- governor ----------------------------------------------------------------------------
def _override_cells(o: InstanceOverride) -> tuple[str, str, str, str]:
    def shown(value: object) -> str:
        if value is None:
            return "-"
        return _yes(value) if isinstance(value, bool) else str(value)

    return (
        shown(o.weight),
        shown(o.drained),
        shown(o.port),
        _metadata(o.metadata) if o.metadata is not None else "-",
    )


def never_configured(service: str) -> str:
    return (
        f"({service} has never been configured: these are the defaults; "
        f"`baton set {service} ...` makes revision 1)"
    )


def config(cfg: ServiceConfig) -> str:
    if cfg.revision == 0 and not cfg.instances:  # no revision in the governor's log
        return f"{_config(cfg)}\n\n{never_configured(cfg.service)}"
    return _config(cfg)


def _config(cfg: ServiceConfig) -> str:
    head = _pairs(
        [
            ("service", cfg.service),
            ("revision", str(cfg.revision)),
            ("strategy", cfg.strategy),
            ("protect_threshold", _number(cfg.protect_threshold)),
            ("warmup_s", _number(cfg.warmup_s)),
            ("outlier", outlier(cfg.outlier)),
        ]
    )
    if not cfg.instances:
        return f"{head}\n\n(no instance overrides)"
    rows = [(iid, *_override_cells(o)) for iid, o in sorted(cfg.instances.items())]
    return f"{head}\n\n" + table(("INSTANCE", "WEIGHT", "DRAINED", "PORT", "METADATA"), rows)


def outlier(o: OutlierConfig) -> str:
    """Outlier settings on one line: `on, 5 failures in a row, success rate, ...`."""
    if not o.enabled:
        return "off"
    rate = "success rate" if o.success_rate else "no success rate"
    probation = "probation" if o.probation else "no probation"
    return (
        f"on, {o.consecutive_failures} failures in a row, {rate}, {probation}, every "
        f"{_number(o.interval_s)} s; ejected {_number(o.base_ejection_s)} s x n up to "
        f"{_number(o.max_ejection_s)} s; at most {_number(o.max_ejected_percent)} %"
    )


def _summary(cfg: ServiceConfig) -> str:
    """A config on one line: `strategy=weighted threshold=0 warmup=0 a(weight=5,drained)`."""
    parts = [
        f"strategy={cfg.strategy}",
        f"threshold={_number(cfg.protect_threshold)}",
        f"warmup={_number(cfg.warmup_s)}",
    ]
    for iid, o in sorted(cfg.instances.items()):
        fields = [
            *([f"weight={o.weight}"] if o.weight is not None else []),
            *([f"port={o.port}"] if o.port is not None else []),
            *(["drained" if o.drained else "undrained"] if o.drained is not None else []),
            *([f"metadata={_metadata(o.metadata)}"] if o.metadata is not None else []),
        ]
        parts.append(f"{iid}({','.join(fields)})")
    return " ".join(parts)


def _what(entry: ConfigApplied) -> str:
    if entry.kind == "rollback" and entry.restored is not None:
        return f"rollback to {entry.restored}"
    return entry.kind


def applied(entry: ConfigApplied) -> str:
    reason = f": {entry.reason}" if entry.reason else ""
    head = (
        f"{entry.service} is at revision {entry.revision} ({_what(entry)} by {entry.actor}{reason})"
    )
    return f"{head}\n\n{config(entry.config)}"


def applied_line(entry: ConfigApplied) -> str:
    reason = f": {entry.reason}" if entry.reason else ""
    return _GAP.join(
        (
            _clock(entry.at),
            entry.service,
            "config",
            f"revision {entry.revision} ({_what(entry)} by {entry.actor}{reason})",
        )
    )


def history(reply: ConfigHistory, *, filtered: bool = False) -> str:
    """The revisions as a table; none at all says why (a filter can leave none of many)."""
    if not reply.entries:
        if filtered:
            return f"(no changes to {reply.service} in that window)"
        return f"({reply.service} has never been configured: no revisions yet)"
    rows = [
        (str(e.revision), _when(e.at), e.actor, _what(e), e.reason or "-", _summary(e.config))
        for e in reply.entries
    ]
    return table(("REV", "AT", "ACTOR", "KIND", "REASON", "CONFIG"), rows)
