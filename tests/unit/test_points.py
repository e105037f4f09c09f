"""The collector's line protocol: escaping, quoting, and one timestamp per point."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from builders import instance

from schemas.balancer import BatchedReport, CallReport, PickCount, PickCounts
from schemas.governor import ConfigApplied, ServiceConfig
from schemas.registry import Heartbeat, InstanceEvent
from services.collector import points


def test_load_carries_what_the_heartbeat_reported() -> None:
    hb = Heartbeat(instance_id="a", inflight=4, cpu=0.5)
    assert points.load("api", hb, "eu-1", 7) == (
        "instance_load,service=api,instance=a,zone=eu-1 beat=1i,inflight=4i,cpu=0.5 7"
    )
    # a heartbeat without load still marks the instance alive
    assert points.load("api", Heartbeat(instance_id="a"), "", 7) == (
        "instance_load,service=api,instance=a,zone=none beat=1i 7"
    )


def test_tags_are_escaped_and_never_empty() -> None:
    line = points.call("api", CallReport(instance_id="a", latency_ms=2, ok=False), "z 1,x=y", 9)
    assert line == (
        r"calls,service=api,instance=a,zone=z\ 1\,x\=y,outcome=error latency_ms=2.0,error=1i 9"
    )
    assert ",zone=none," in points.call("api", CallReport(instance_id="a", latency_ms=1), "", 9)


def test_string_fields_are_quoted_and_escaped() -> None:
    cfg = ServiceConfig(service="api", revision=3, strategy="random")
    entry = ConfigApplied(
        service="api",
        revision=3,
        config=cfg,
        actor='ann "ops"',
        reason="a\\b\nc",
        at=datetime.now(UTC),
        kind="rollback",
        restored=1,
    )
    line = points.config_change(entry, 5)
    assert r'actor="ann \"ops\""' in line
    assert r'reason="a\\b c"' in line  # a newline would end the line: it becomes a space
    assert line.startswith("config_changes,service=api,kind=rollback revision=3i,")


def test_registry_event_and_picks() -> None:
    event = InstanceEvent(
        kind="expired", service="api", instance=instance("a"), at=datetime.now(UTC)
    )
    assert points.registry_event(event, 3) == (
        'registry_events,service=api,kind=expired instance="a",text="a expired",count=1i 3'
    )
    counts = PickCounts(
        service="api",
        node="n",
        interval_s=1,
        picks=[
            PickCount(instance_id="a", strategy="weighted", count=7, weight=50),
        ],
    )
    assert points.picks(counts, 4) == [
        "picks,service=api,instance=a,strategy=weighted count=7i,weight=50i 4"
    ]


def test_timestamps_are_strictly_increasing_even_within_one_nanosecond_tick() -> None:
    clock = points.Clock()
    stamps = [clock() for _ in range(10_000)]
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_cached_lines_are_the_lines_the_functions_build() -> None:
    lines = points.Lines(size=2)  # small: the cache starts over while in use
    reports = [
        ("api", CallReport(instance_id="a", latency_ms=2, ok=False), "z 1,x=y"),
        ("api", CallReport(instance_id="a", latency_ms=0.125), "z 1,x=y"),
        ("api", CallReport(instance_id="b", latency_ms=3.5), ""),
        ("web", CallReport(instance_id="a", latency_ms=1e-7), "eu-1"),
    ]
    for ts, (service, report, zone) in enumerate(reports * 2):
        assert lines.call(service, report, zone, ts) == points.call(service, report, zone, ts)
    beats = [
        Heartbeat(instance_id="a", inflight=4, cpu=0.5),
        Heartbeat(instance_id="a"),
        Heartbeat(instance_id="b", inflight=0, cpu=1, mem=0.25, latency_ms=7),
    ]
    for ts, hb in enumerate(beats * 2):
        for zone in ("eu-1", "", "a=b"):
            assert lines.load("api", hb, zone, ts) == points.load("api", hb, zone, ts)
    # the cached head follows the outcome: one instance's ok and error calls differ
    ok, failed = (CallReport(instance_id="a", latency_ms=1, ok=v) for v in (True, False))
    assert lines.call("api", ok, "", 1).endswith(" latency_ms=1.0,error=0i 1")
    assert ",outcome=error latency_ms=1.0,error=1i 1" in lines.call("api", failed, "", 1)


def test_a_batch_makes_the_same_lines_as_its_reports_alone() -> None:
    said = (("a", 1, True), ("b", 2.5, False), ("a", 3, True), ("a", 4, False))
    reports = [BatchedReport(instance_id=iid, latency_ms=ms, ok=ok) for iid, ms, ok in said]
    zones = {("shop", "a"): "eu 1"}
    lines = points.Lines()
    batch, bad = lines.calls("shop", reports, zones, 1000)
    alone = [
        points.call("shop", CallReport(instance_id=iid, latency_ms=ms, ok=ok),
                    zones.get(("shop", iid), ""), 1000 + n)
        for n, (iid, ms, ok) in enumerate(said)
    ]  # fmt: skip
    assert (batch, bad) == (alone, [])
    # an id that breaks the name rule is left out (and named); the others are written
    mixed = [*reports[:2], BatchedReport(instance_id="web 1", latency_ms=1), reports[2]]
    got, bad = points.Lines().calls("shop", mixed, zones, 1000)
    assert bad == ["web 1"]
    assert got == alone[:3]  # the bad one took no timestamp
    clock = points.Clock()
    first = clock.reserve(3)
    assert clock() >= first + 3  # the three reserved are never handed out again
