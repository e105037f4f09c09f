"""The collector end to end: the fleet talks on a real NATS, points land in a real InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from conftest import Events, reg
from influxserver import InfluxServer, influxd_binary
from waiting import until
from workers import run_balancer, run_collector, run_governor, run_registry

from schemas import subjects
from schemas.balancer import BatchedReport, CallReport, CallReports, Endpoint, ResolveRequest
from schemas.checks import CheckResult
from schemas.governor import ConfigApplied, ConfigChange, OutlierPatch
from schemas.registry import Ack, Deregistration, Heartbeat

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from natsserver import NatsServer

    from services.bus import Bus

pytestmark = pytest.mark.skipif(
    influxd_binary() is None, reason="influxd missing: apt-get install -y influxdb (just test does)"
)


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path / "influx").start()
    yield server
    server.stop()


@pytest.fixture
async def stack(nats_server: NatsServer, influx: InfluxServer) -> AsyncIterator[Any]:
    url = nats_server.url
    async with (
        run_registry(url),
        run_balancer(url) as balancer,
        run_governor(url),
        run_collector(url, influx.url) as collector,
    ):
        await asyncio.wait_for(collector.ready.wait(), 10)
        collector.balancer_under_test = balancer  # what the tests wait on beside it
        yield collector


def rows(influx: InfluxServer, q: str) -> list[dict[str, Any]]:
    result: Any = influx.query(q)
    series = result["results"][0].get("series", [])
    out = []
    for s in series:
        tags = s.get("tags", {})
        out += [{**tags, **dict(zip(s["columns"], v, strict=True))} for v in s["values"]]
    return out


async def until_rows(
    influx: InfluxServer, q: str, n: int, timeout: float = 10.0, *, fields: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Poll InfluxDB (another process) until the query returns at least n rows, each with
    every one of `fields`. InfluxDB 1.x files a point's fields into its cache one after
    another, so a query racing the write can see a row whose other fields are still null."""

    async def enough() -> list[dict[str, Any]] | None:
        found = await asyncio.to_thread(rows, influx, q)
        whole = all(r.get(f) is not None for r in found for f in fields)
        return found if len(found) >= n and whole else None

    return await until(enough, timeout, interval=0.1, what=f"{n} rows of {q}")


async def test_every_kind_of_point_lands_with_its_tags_and_values(
    stack: Any, influx: InfluxServer, bus: Bus, events: Events
) -> None:
    await bus.request(subjects.register("shop"), reg("s1", 8001, zone="eu-1"), Ack)
    await bus.request(subjects.register("shop"), reg("s2", 8002, zone="eu-2", weight=50), Ack)
    await events.wait_for("registered", "s2")
    pools = stack.balancer_under_test.pools  # the balancer and the collector follow it too
    await until(lambda: "shop" in pools and len(pools["shop"].members) == 2)
    await until(lambda: ("shop", "s2") in stack.zones)
    hb = Heartbeat(instance_id="s1", inflight=3, cpu=0.5, mem=0.25, latency_ms=12.0)
    await bus.request(subjects.heartbeat("shop"), hb, Ack)
    for n in range(10):
        ep = await bus.request(
            subjects.resolve("shop"), ResolveRequest(strategy="round_robin"), Endpoint
        )
        report = CallReport(
            instance_id=ep.instance_id, latency_ms=10.0 + n, ok=n != 3, pick=ep.pick
        )
        await bus.publish(subjects.report("shop"), report)
    await bus.request(
        subjects.change("shop"),
        ConfigChange(actor="ann", strategy="random", reason="try"),
        ConfigApplied,
    )
    await bus.request(subjects.deregister("shop"), Deregistration(instance_id="s2"), Ack)

    load = await until_rows(influx, "SELECT * FROM instance_load WHERE \"service\" = 'shop'", 1)
    assert [
        (r["instance"], r["zone"], r["inflight"], r["cpu"], r["mem"], r["latency_ms"]) for r in load
    ] == [("s1", "eu-1", 3, 0.5, 0.25, 12.0)]
    calls = await until_rows(influx, "SELECT * FROM calls WHERE \"service\" = 'shop'", 10)
    assert len(calls) == 10  # one point per call, none lost to equal timestamps
    assert sum(r["error"] for r in calls) == 1
    assert {r["outcome"] for r in calls if r["error"]} == {"error"}
    assert {(r["instance"], r["zone"]) for r in calls} == {("s1", "eu-1"), ("s2", "eu-2")}
    assert sorted(r["latency_ms"] for r in calls) == [10.0 + n for n in range(10)]
    picks = await until_rows(influx, "SELECT * FROM picks WHERE \"service\" = 'shop'", 2)
    by_instance = {r["instance"]: r for r in picks}
    assert sum(r["count"] for r in picks) == 10
    assert (by_instance["s2"]["weight"], by_instance["s1"]["strategy"]) == (50, "round_robin")
    events_rows = await until_rows(
        influx, "SELECT * FROM registry_events WHERE \"service\" = 'shop'", 3
    )
    assert {(r["kind"], r["instance"]) for r in events_rows} >= {
        ("registered", "s1"),
        ("registered", "s2"),
        ("deregistered", "s2"),
    }
    changes = await until_rows(influx, "SELECT * FROM config_changes WHERE \"service\" = 'shop'", 1)
    assert (changes[0]["revision"], changes[0]["actor"], changes[0]["reason"]) == (1, "ann", "try")
    assert "strategy=random" in changes[0]["text"]


async def test_influxdb_outage_under_load_loses_no_point(
    nats_server: NatsServer, influx: InfluxServer, bus: Bus
) -> None:
    async with run_collector(nats_server.url, influx.url) as collector:
        await asyncio.wait_for(collector.ready.wait(), 10)
        sent = 0

        async def talk(seconds: float) -> None:
            nonlocal sent
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                for _ in range(50):
                    await bus.publish(
                        subjects.report("load"), CallReport(instance_id="i1", latency_ms=1.0)
                    )
                    sent += 1
                await asyncio.sleep(0.01)  # pacing the load, not waiting for anything

        await talk(1.0)
        influx.stop()  # InfluxDB goes away while the fleet keeps talking
        await talk(3.0)
        influx.start()
        await talk(1.0)
        await bus.nc.flush()
        count = 'SELECT count("latency_ms") FROM calls'

        async def all_written() -> bool:
            got = await asyncio.to_thread(rows, influx, count)
            return bool(got) and got[0]["count"] >= sent

        await until(all_written, 60, interval=0.2, what=f"{sent} points written")
        assert (await asyncio.to_thread(rows, influx, count))[0]["count"] == sent
        stats = collector.stats
        assert stats["retried"] > 0
        assert stats["dropped"] == 0


async def test_bad_messages_are_counted_and_the_good_ones_after_them_written(
    nats_server: NatsServer, influx: InfluxServer, bus: Bus
) -> None:
    async with run_collector(nats_server.url, influx.url) as collector:
        await asyncio.wait_for(collector.ready.wait(), 10)
        bad = [
            (subjects.report("shop"), b"not json"),
            (subjects.report("shop"), b'{"instance_id": "no spaces", "latency_ms": 1}'),
            (subjects.report("shop"), b'{"instance_id": "s1", "latency_ms": -1}'),
            (subjects.report("shop") + "x" * 80, b'{"instance_id": "s1", "latency_ms": 1}'),
            (subjects.heartbeat("shop"), b'{"instance_id": 7}'),
        ]
        for subject, payload in bad:
            await bus.nc.publish(subject, payload)
        await bus.publish(subjects.report("shop"), CallReport(instance_id="s1", latency_ms=5.0))
        await bus.publish(subjects.heartbeat("shop"), Heartbeat(instance_id="s1", inflight=2))
        # one connection's messages arrive in order: the good ones land after the bad ones
        calls = await until_rows(influx, "SELECT * FROM calls", 1)
        load = await until_rows(influx, "SELECT * FROM instance_load", 1)
        assert [(r["instance"], r["latency_ms"]) for r in calls] == [("s1", 5.0)]
        assert [(r["instance"], r["inflight"]) for r in load] == [("s1", 2)]
        assert collector.bus.errors == {
            (subjects.every(subjects.REPORT), 400): 4,
            (subjects.every(subjects.HEARTBEAT), 400): 1,
        }


async def test_an_ejection_lands_for_the_dashboards(
    stack: Any, influx: InfluxServer, bus: Bus, events: Events
) -> None:
    change = ConfigChange(
        actor="ann", outlier=OutlierPatch(consecutive_failures=2, max_ejected_percent=50)
    )
    await bus.request(subjects.change("shop"), change, ConfigApplied)
    for n in (1, 2):
        await bus.request(subjects.register("shop"), reg(f"s{n}", 8000 + n), Ack)
        await events.wait_for("registered", f"s{n}")
    ejected: list[dict[str, Any]] = []
    for _ in range(50):  # the balancer takes the config and the fleet in a few ms: retry
        for _ in range(2):
            await bus.publish(
                subjects.report("shop"), CallReport(instance_id="s1", latency_ms=1, ok=False)
            )
        with contextlib.suppress(AssertionError):  # until() raises "not within": not yet
            ejected = await until_rows(
                influx, "SELECT * FROM outlier_events WHERE \"service\" = 'shop'", 1, timeout=0.2
            )
        if ejected:
            break
    (row,) = ejected
    assert (row["kind"], row["instance"], row["ejections"], row["ejected"]) == (
        "ejected",
        "s1",
        1,
        1,
    )
    assert row["text"].startswith("s1 ejected until ")
    assert row["reason"] == "consecutive_failures: 2 failed calls in a row"
    assert row["until_s"] > time.time() + 20  # 30 s by default


async def test_single_and_batched_reports_each_make_a_point(
    stack: Any, influx: InfluxServer, bus: Bus, events: Events
) -> None:
    await bus.request(subjects.register("cart"), reg("c1", 8001, zone="eu-1"), Ack)
    await events.wait_for("registered", "c1")
    for n in range(30):
        await bus.publish(
            subjects.report("cart"), CallReport(instance_id="c1", latency_ms=n, ok=n != 5)
        )
    batch = [BatchedReport(instance_id="c1", latency_ms=100 + n, ok=n != 7) for n in range(170)]
    bad = BatchedReport(instance_id="no good", latency_ms=5)  # dropped, counted: not the rest
    await bus.publish(subjects.reports("cart"), CallReports(reports=[*batch[:70], bad]))
    await bus.publish(subjects.reports("cart"), CallReports(reports=batch[70:]))
    q = "SELECT * FROM calls WHERE \"service\" = 'cart'"
    calls = await until_rows(influx, q, 200)
    assert len(calls) == 200  # 30 alone + 170 in two batches: one point each
    assert sorted(r["latency_ms"] for r in calls) == [float(n) for n in range(30)] + [
        100.0 + n for n in range(170)
    ]
    assert sum(r["error"] for r in calls) == 2
    assert stack.bus.errors[(subjects.every(subjects.REPORTS), 400)] == 1


async def test_check_results_and_transitions_land(
    stack: Any, influx: InfluxServer, bus: Bus
) -> None:
    at = datetime.now(UTC)
    for previous, status in ((None, "critical"), ("critical", "critical"), ("critical", "passing")):
        result = CheckResult(
            instance_id="db-1",
            check_id="tcp",
            status=status,  # type: ignore[arg-type]  # the statuses above
            output="TCP connect 10.0.0.5:5432: Success" if status == "passing" else "refused",
            at=at,
            duration_ms=1.5,
            previous=previous,  # type: ignore[arg-type]
        )
        await bus.publish(subjects.check_results("db"), result)
    q = "SELECT * FROM check_results WHERE \"service\" = 'db'"
    runs = await until_rows(influx, q, 3, fields=("code", "duration_ms", "transition"))
    assert [(r["status"], r["code"], r["transition"]) for r in runs] == [
        ("critical", 2, 0),
        ("critical", 2, 0),
        ("passing", 0, 1),
    ]
    (change,) = await until_rows(
        influx, "SELECT * FROM check_transitions", 1, fields=("instance", "check", "text")
    )
    assert (change["kind"], change["instance"], change["check"], change["previous"]) == (
        "passing",
        "db-1",
        "tcp",
        "critical",
    )
    assert change["text"] == "db-1 tcp: critical -> passing"
