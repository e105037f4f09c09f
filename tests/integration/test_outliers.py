"""Outlier ejection through real servers: registry, governor, one or two balancers, NATS."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from barrier import subscribed
from conftest import Events, reg
from nats.js import api
from waiting import until
from workers import run_balancer

from schemas import subjects
from schemas.balancer import (
    CallReport,
    Ejection,
    Ejections,
    Endpoint,
    OutlierEvent,
    OutlierState,
    ResolveRequest,
)
from schemas.fields import from_timestamp
from schemas.governor import (
    ConfigApplied,
    ConfigChange,
    OutlierConfig,
    OutlierPatch,
    ServiceConfig,
)
from schemas.registry import Ack, Empty
from services.balancer.ejector import ensure_outlier_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer

    from services.bus import Bus

SERVICE = "pay"
FAST = {"interval_s": 0.25, "base_ejection_s": 0.6, "max_ejection_s": 5.0}
# For a second ejection asserted to be the next multiple (0.6 s x 2): the multiplier falls
# by one per interval served since the return (`returned.at`, the first ejection's `until`),
# and the test only reacts once it has seen the return, so with FAST's 0.25 s a scheduler
# delay that long (under load) made it a first ejection again (0.6 s). A long interval
# leaves the multiplier whatever the delays; the ejections themselves stay short.
REPEATED = FAST | {"interval_s": 60.0}


class Outliers:
    """Every event on balancer.v1.events.>, in order."""

    def __init__(self) -> None:
        self.seen: list[OutlierEvent] = []

    async def on_msg(self, msg: Any) -> None:
        self.seen.append(msgspec.json.decode(msg.data, type=OutlierEvent))

    def of(self, kind: str, iid: str) -> list[OutlierEvent]:
        return [e for e in self.seen if e.kind == kind and e.instance_id == iid]

    async def wait(self, kind: str, iid: str, timeout: float = 5.0) -> OutlierEvent:
        await until(lambda: bool(self.of(kind, iid)), what=f"{kind} {iid}", timeout=timeout)
        return self.of(kind, iid)[0]


@pytest.fixture
async def outlier_events(nc: Client) -> AsyncIterator[Outliers]:
    seen = Outliers()
    sub = await nc.subscribe(subjects.every(subjects.BALANCER_EVENTS), cb=seen.on_msg)
    await subscribed(nc)
    yield seen
    await sub.unsubscribe()


async def configure(bus: Bus, balancers: list[Any], **outlier: Any) -> None:
    change = ConfigChange(actor="test", outlier=OutlierPatch(**outlier))
    applied = await bus.request(subjects.change(SERVICE), change, ConfigApplied)

    def seen() -> bool:
        return all(
            b.configs.get(SERVICE) is not None and b.configs[SERVICE].revision >= applied.revision
            for b in balancers
        )

    await until(seen, what="the balancers to take the config")


async def fleet(bus: Bus, events: Events, balancers: list[Any], ids: list[str]) -> None:
    for n, iid in enumerate(ids):
        await bus.request(subjects.register(SERVICE), reg(iid, port=9000 + n), Ack)
        await events.wait_for("registered", iid)

    def known() -> bool:
        return all(
            SERVICE in b.pools and set(ids) <= set(b.pools[SERVICE].members) for b in balancers
        )

    await until(known, what="the balancers to know the fleet")


async def long_ejections(bus: Bus, events: Events, balancer: Any, ids: list[str]) -> None:
    """One balancer over `ids`, ejecting after 2 failures for 30 s: no return mid-test."""
    await configure(
        bus, [balancer], consecutive_failures=2, max_ejected_percent=50,
        interval_s=0.25, base_ejection_s=30, max_ejection_s=60,
    )  # fmt: skip
    await fleet(bus, events, [balancer], ids)


async def report(bus: Bus, iid: str, *, ok: bool, times: int = 1) -> None:
    for _ in range(times):
        await bus.publish(
            subjects.report(SERVICE), CallReport(instance_id=iid, latency_ms=1, ok=ok)
        )
    await bus.nc.flush()


def published(balancers: list[Any]) -> list[OutlierEvent]:
    """The events the replicas published, as each noted them (once its store was acked)."""
    return [e for b in balancers for e in b.ejector.published]


async def picks(bus: Bus, n: int) -> list[Endpoint]:
    req = ResolveRequest(strategy="round_robin")
    return [await bus.request(subjects.resolve(SERVICE), req, Endpoint) for _ in range(n)]


async def listing(bus: Bus) -> Ejections:
    return await bus.request(subjects.ejections(SERVICE), Empty(), Ejections)


@pytest.mark.usefixtures("governor")
async def test_consecutive_failures_eject_until_the_time_is_over(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    await configure(bus, [balancer], consecutive_failures=3, max_ejected_percent=50, **REPEATED)
    await fleet(bus, events, [balancer], ["a", "b", "c"])
    # a success between failures resets the count: 2 + ok + 2 is no ejection
    await report(bus, "a", ok=False, times=2)
    await report(bus, "a", ok=True)
    await report(bus, "a", ok=False, times=2)
    assert {ep.instance_id for ep in await picks(bus, 6)} == {"a", "b", "c"}
    assert outlier_events.seen == []

    await report(bus, "a", ok=False)  # the third in a row
    ejected = await outlier_events.wait("ejected", "a")
    assert ejected.reason == "consecutive_failures: 3 failed calls in a row"
    assert ejected.ejections == 1
    assert ejected.ejected == 1
    assert 0.5 < (ejected.until - ejected.at).total_seconds() <= 0.6 + 1e-6
    await until(lambda: balancer.pools[SERVICE].members["a"].ejected, what="a ejected")
    got = [ep.instance_id for ep in await picks(bus, 8)]
    assert "a" not in got
    shown = await listing(bus)
    assert [e.instance_id for e in shown.ejected] == ["a"]
    assert shown.ejected[0].until == ejected.until
    assert shown.max_ejected == 2

    back = await outlier_events.wait("returned", "a", timeout=5)
    assert back.until == ejected.until
    assert back.at >= ejected.until
    assert "a" in {ep.instance_id for ep in await picks(bus, 6)}
    assert (await listing(bus)).ejected == []
    assert len(outlier_events.of("ejected", "a")) == 1
    assert len(outlier_events.of("returned", "a")) == 1

    # ejected again at once: the multiplier says twice as long
    await report(bus, "a", ok=False, times=3)
    await until(lambda: len(outlier_events.of("ejected", "a")) == 2, what="a second ejection")
    again = outlier_events.of("ejected", "a")[1]
    assert again.ejections == 2
    assert (again.until - again.at).total_seconds() == pytest.approx(1.2, abs=0.01)


@pytest.mark.usefixtures("governor")
async def test_a_returned_instance_is_on_probation_until_a_call_succeeds(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    await configure(bus, [balancer], consecutive_failures=3, max_ejected_percent=50, **REPEATED)
    await fleet(bus, events, [balancer], ["a", "b", "c", "d"])
    for iid in ("a", "b"):
        await report(bus, iid, ok=False, times=3)
        await outlier_events.wait("ejected", iid)
    await outlier_events.wait("returned", "a")
    await outlier_events.wait("returned", "b")

    # "a" fails once after its return, before any success: ejected again at once, for the
    # next multiple (0.6 s x 2)
    await report(bus, "a", ok=False)
    await until(lambda: len(outlier_events.of("ejected", "a")) == 2, what="a ejected again")
    again = outlier_events.of("ejected", "a")[1]
    assert again.reason == "probation: a call failed before any succeeded since it returned"
    assert again.ejections == 2
    assert (again.until - again.at).total_seconds() == pytest.approx(1.2, abs=0.01)

    # "b" succeeds first: its probation is over, and only the third failure in a row
    # ejects it (on probation the first would have, with the probation reason)
    await report(bus, "b", ok=True)
    await report(bus, "b", ok=False, times=3)
    await until(lambda: len(outlier_events.of("ejected", "b")) == 2, what="b ejected again")
    assert outlier_events.of("ejected", "b")[1].reason == (
        "consecutive_failures: 3 failed calls in a row"
    )


@pytest.mark.usefixtures("governor")
async def test_without_probation_a_returned_instance_needs_the_whole_row(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    await configure(
        bus, [balancer], consecutive_failures=3, max_ejected_percent=50, probation=False, **FAST
    )
    await fleet(bus, events, [balancer], ["a", "b", "c"])
    await report(bus, "a", ok=False, times=3)
    await outlier_events.wait("ejected", "a")
    await outlier_events.wait("returned", "a")
    await report(bus, "a", ok=False, times=3)  # ejected at the third, not the first
    await until(lambda: len(outlier_events.of("ejected", "a")) == 2, what="a ejected again")
    assert outlier_events.of("ejected", "a")[1].reason == (
        "consecutive_failures: 3 failed calls in a row"
    )


@pytest.mark.usefixtures("governor")
async def test_the_cap_keeps_the_rest_serving_and_says_so(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    await configure(bus, [balancer], consecutive_failures=2, max_ejected_percent=10, **FAST)
    await fleet(bus, events, [balancer], ["a", "b", "c", "d"])
    await report(bus, "a", ok=False, times=2)
    await outlier_events.wait("ejected", "a")
    await report(bus, "b", ok=False, times=2)  # 10 % of 4: one at most

    async def held() -> bool:
        return (await listing(bus)).held == ["b"]

    await until(held, what="b held by the cap")
    eps = await picks(bus, 6)
    assert "a" not in {ep.instance_id for ep in eps}
    assert "b" in {ep.instance_id for ep in eps}  # the cap keeps it serving
    assert all(ep.panic for ep in eps)  # and the flag says something is off
    assert outlier_events.of("ejected", "b") == []
    shown = await listing(bus)
    assert [e.instance_id for e in shown.ejected] == ["a"]
    assert shown.max_ejected == 1


@pytest.mark.usefixtures("governor")
async def test_the_only_instance_ejected_is_a_503_that_says_why(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    await configure(bus, [balancer], consecutive_failures=2, **FAST)
    await fleet(bus, events, [balancer], ["solo"])
    await report(bus, "solo", ok=False, times=2)
    await outlier_events.wait("ejected", "solo")
    await until(lambda: balancer.pools[SERVICE].members["solo"].ejected, what="solo ejected")
    with pytest.raises(Exception, match="1 ejected as outliers") as err:
        await picks(bus, 1)
    assert getattr(err.value, "code", None) == 503


@pytest.mark.usefixtures("governor")
async def test_success_rate_ejects_the_instance_below_the_fleet(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    ids = ["i0", "i1", "i2", "i3", "i4", "bad"]
    # consecutive failures out of the way: only the success-rate rule can eject
    await configure(
        bus, [balancer], consecutive_failures=1000, max_ejected_percent=50,
        interval_s=1.0, base_ejection_s=5.0, max_ejection_s=10.0,
    )  # fmt: skip
    await fleet(bus, events, [balancer], ids)
    for _ in range(3):  # a batch split by an interval boundary counts in neither: again
        # start just after a sweep: the wall clock's boundary, not a condition to await
        await asyncio.sleep((1.0 - time.time() % 1.0) % 1.0 + 0.01)
        for n in range(120):
            for iid in ids:
                await bus.publish(
                    subjects.report(SERVICE),
                    CallReport(instance_id=iid, latency_ms=1, ok=iid != "bad" or n % 2 == 0),
                )
        await bus.nc.flush()
        try:
            await outlier_events.wait("ejected", "bad", timeout=1.5)
            break
        except pytest.fail.Exception:
            continue
    ejected = await outlier_events.wait("ejected", "bad", timeout=0.1)
    assert ejected.reason.startswith("success_rate: 50.0% of 120 calls, below ")
    assert [e.instance_id for e in outlier_events.seen if e.kind == "ejected"] == ["bad"]


@pytest.mark.usefixtures("governor")
async def test_out_of_range_settings_are_a_400_naming_the_field(bus: Bus) -> None:
    for raw, says in (
        (b'{"actor":"x","outlier":{"interval_s":0}}', "interval_s must be"),
        (b'{"actor":"x","outlier":{"max_ejected_percent":200}}', "max_ejected_percent must"),
        (b'{"actor":"x","outlier":{"base_ejection_s":500}}', "max_ejection_s (300) must"),
        (b'{"actor":"x","outlier":{"probation":"no"}}', "probation must be true or false"),
    ):
        reply = await bus.nc.request(subjects.change(SERVICE), raw, timeout=2)
        assert reply.headers is not None
        assert reply.headers.get("Nats-Service-Error-Code") == "400", reply.data
        assert says in reply.headers.get("Nats-Service-Error", "")
    # the settings are unchanged: still the defaults
    cfg = await bus.request(subjects.config(SERVICE), Empty(), ServiceConfig)
    assert cfg.outlier == OutlierConfig()


@pytest.mark.usefixtures("governor")
async def test_two_replicas_agree_and_publish_each_event_once(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers, nats_server: NatsServer
) -> None:
    async with run_balancer(nats_server.url) as second:
        await asyncio.wait_for(second.sync.synced.wait(), 5)
        both = [balancer, second]
        await configure(bus, both, consecutive_failures=3, max_ejected_percent=50, **FAST)
        await fleet(bus, events, both, ["a", "b", "c", "d"])
        # both replicas see every report, so both decide to eject "a" and "b" at once
        await report(bus, "a", ok=False, times=3)
        await report(bus, "b", ok=False, times=3)
        await outlier_events.wait("ejected", "a")
        await outlier_events.wait("ejected", "b")

        def agreed() -> bool:
            return all(b.pools[SERVICE].ejected == {"a", "b"} for b in both)

        await until(agreed, what="both replicas to eject a and b")
        for b in both:  # each replica's picks avoid both (resolve goes to either)
            assert [e.instance_id for e in b.ejector.listing(SERVICE).ejected] == ["a", "b"]
        got = {ep.instance_id for ep in await picks(bus, 20)}
        assert got == {"c", "d"}

        await outlier_events.wait("returned", "a")
        await outlier_events.wait("returned", "b")
        await until(lambda: all(not b.pools[SERVICE].ejected for b in both), what="both to return")
        for iid in ("a", "b"):
            assert len(outlier_events.of("ejected", iid)) == 1
            assert len(outlier_events.of("returned", iid)) == 1
        # a replica notes an event it published once the store acks it, which can be after
        # the subscribers got it (the stream republishes it as it stores it)
        await until(lambda: len(published(both)) >= 4, what="both replicas' store acks")
        assert sorted((e.kind, e.instance_id) for e in published(both)) == [
            ("ejected", "a"), ("ejected", "b"), ("returned", "a"), ("returned", "b")
        ]  # fmt: skip


class Raw:
    """Every message on balancer.v1.events.>, as it came (headers too)."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []

    async def on_msg(self, msg: Any) -> None:
        self.msgs.append(msg)


@pytest.mark.usefixtures("governor")
async def test_the_stored_event_is_the_published_event(
    bus: Bus, events: Events, balancer: Any, nats_server: NatsServer
) -> None:
    raw = Raw()
    sub = await bus.nc.subscribe(subjects.every(subjects.BALANCER_EVENTS), cb=raw.on_msg)
    await subscribed(bus.nc)
    js = bus.nc.jetstream()
    try:
        async with run_balancer(nats_server.url) as second:
            await asyncio.wait_for(second.sync.synced.wait(), 5)
            both = [balancer, second]
            await configure(bus, both, consecutive_failures=3, max_ejected_percent=50, **FAST)
            await fleet(bus, events, both, ["a", "b", "c"])
            await report(bus, "a", ok=False, times=3)  # both replicas decide it
            await until(lambda: len(raw.msgs) >= 2, what="the ejection and the return")
            # what the stream holds is the very message subscribers got, once each
            stored = await js.get_last_msg(subjects.OUTLIER_STREAM, subjects.outlier_event(SERVICE))
            assert stored.data == raw.msgs[-1].data
            assert stored.headers is not None
            assert raw.msgs[-1].headers["Nats-Sequence"] == str(stored.seq)
            got = [msgspec.json.decode(m.data, type=OutlierEvent) for m in raw.msgs]
            assert [(e.kind, e.instance_id) for e in got] == [("ejected", "a"), ("returned", "a")]
            # noted by the replica once the store acks it, maybe after the subscribers got it
            await until(lambda: len(published(both)) >= 2, what="the replicas' store acks")
            assert sorted(e.kind for e in published(both)) == ["ejected", "returned"]  # one each
            # the record carries the state every replica applies
            assert subjects.OUTLIER_STATE_HEADER in stored.headers
            await until(
                lambda: all(not b.pools[SERVICE].ejected for b in both), what="both to apply it"
            )
    finally:
        await sub.unsubscribe()


@pytest.mark.usefixtures("governor")
async def test_an_event_stored_by_a_replica_that_dies_at_once_is_not_lost(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers
) -> None:
    """A replica that stores an ejection and crashes before doing anything else: the
    store is all it takes, the subscribers get the event and the replicas apply it."""
    await long_ejections(bus, events, balancer, ["a", "b", "c"])
    js = bus.nc.jetstream()
    now = time.time()
    state = OutlierState(
        ejected={"b": Ejection(since=now, until=now + 30, reason="test: stored", times=1)}
    )
    event = OutlierEvent(
        kind="ejected", service=SERVICE, instance_id="b", until=from_timestamp(now + 30),
        reason="test: stored", at=from_timestamp(now), ejections=1, ejected=1, node="gone",
    )  # fmt: skip
    seq = balancer.ejector.seqs.get(SERVICE, 0)
    await js.publish(
        subjects.outlier_event(SERVICE),
        msgspec.json.encode(event),
        headers={
            "Nats-Expected-Last-Subject-Sequence": str(seq),
            "Nats-Expected-Last-Subject-Sequence-Subject": subjects.outlier_records(SERVICE),
            subjects.OUTLIER_STATE_HEADER: msgspec.json.encode(state).decode(),
        },
    )  # exactly the balancer's write, and then nothing: no publish of the event
    got = await outlier_events.wait("ejected", "b")
    assert got == event
    await until(lambda: balancer.pools[SERVICE].ejected == {"b"}, what="b applied")
    assert balancer.ejector.published == []  # this replica published nothing


@pytest.mark.usefixtures("governor")
async def test_a_replica_started_later_applies_the_stored_ejections(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers, nats_server: NatsServer
) -> None:
    await long_ejections(bus, events, balancer, ["a", "b", "c"])
    await report(bus, "a", ok=False, times=2)
    ejected = await outlier_events.wait("ejected", "a")
    async with run_balancer(nats_server.url) as late:
        await asyncio.wait_for(late.sync.synced.wait(), 5)
        await until(
            lambda: late.pools[SERVICE].ejected == {"a"}, what="the late replica to eject a"
        )
        shown = late.ejector.listing(SERVICE)
        assert [(e.instance_id, e.until) for e in shown.ejected] == [("a", ejected.until)]


# -- what operators see --------------------------------------------------------------------
BATON = Path(sys.executable).parent / "baton"


async def baton(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        BATON, *args, stdout=asyncio.subprocess.PIPE, env={**os.environ, "NATS_URL": url}
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.usefixtures("governor")
async def test_cli_shows_ejections_and_watch_prints_them(
    bus: Bus, events: Events, balancer: Any, outlier_events: Outliers, nats_server: NatsServer
) -> None:
    await long_ejections(bus, events, balancer, ["a", "b"])
    watch = await asyncio.create_subprocess_exec(
        BATON, "watch", SERVICE, "--count", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NATS_URL": nats_server.url},
    )  # fmt: skip
    try:
        assert watch.stderr is not None
        said = await asyncio.wait_for(watch.stderr.readline(), 15)  # subscribed by now
        assert said.startswith(b"baton: watching "), said
        await report(bus, "a", ok=False, times=2)
        ejected = await outlier_events.wait("ejected", "a")
        out, _ = await asyncio.wait_for(watch.communicate(), 15)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    cells = out.decode().split()
    assert cells[1:4] == [SERVICE, "ejected", "a"]
    assert "consecutive_failures:" in cells

    code, table = await baton(nats_server.url, "instances", SERVICE)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in table.splitlines()}
    assert rows["INSTANCE"][-2:] == ["EJECTED", "CHECKS"]  # CHECKS: '-', none are probed
    until_clock = ejected.until.strftime("%H:%M:%S.%f")[:-3] + "Z"
    assert rows["a"][-3:] == ["until", until_clock, "-"]
    assert rows["b"][-2:] == ["no", "-"]

    code, shown = await baton(nats_server.url, "ejections", SERVICE)
    assert code == 0
    assert shown.splitlines()[1].split()[:4] == ["a", ejected.at.strftime("%H:%M:%S.%f")[:-3] + "Z",
                                                  until_clock, "1"]  # fmt: skip
    assert "(at most 1 ejected at once)" in shown
    code, raw = await baton(nats_server.url, "--json", "ejections", SERVICE)
    listed = msgspec.json.decode(raw, type=Ejections)
    assert [e.instance_id for e in listed.ejected] == ["a"]


@pytest.mark.usefixtures("governor")
async def test_cli_sets_outlier_fields_and_shows_them(nats_server: NatsServer) -> None:
    code, _ = await baton(
        nats_server.url, "set", SERVICE, "outlier", "consecutive_failures=3", "enabled=false",
        "--actor", "ann",
    )  # fmt: skip
    assert code == 0
    code, shown = await baton(nats_server.url, "config", SERVICE)
    assert code == 0
    settings = dict(line.split(maxsplit=1) for line in shown.split("\n\n")[0].splitlines())
    assert settings["outlier"] == "off"
    code, _ = await baton(nats_server.url, "set", SERVICE, "outlier", "enabled=true")
    assert code == 0
    code, shown = await baton(nats_server.url, "config", SERVICE)
    assert "on, 3 failures in a row, success rate, probation, every 10 s" in shown  # 3 was kept
    for bad in ("interval_s=0", "nonsense=1"):
        proc = await asyncio.create_subprocess_exec(
            BATON, "set", SERVICE, "outlier", bad, "--actor", "ann",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NATS_URL": nats_server.url},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 2, err
        said = err.decode()
        assert ("interval_s must be a number of seconds 0.05..3600" in said) or (
            "no outlier field nonsense" in said
        ), said


async def test_a_stream_made_by_an_older_balancer_gets_the_republish(bus: Bus) -> None:
    js = bus.nc.jetstream()
    old = api.StreamConfig(
        name=subjects.OUTLIER_STREAM,
        subjects=[subjects.every(subjects.OUTLIER_LOG)],
        max_msgs_per_subject=1,
    )
    await js.add_stream(old)
    await ensure_outlier_stream(bus, replicas=1)
    info = await js.stream_info(subjects.OUTLIER_STREAM)
    assert info.config.republish is not None
    assert (info.config.republish.src, info.config.republish.dest) == subjects.outlier_republish()
    await ensure_outlier_stream(bus, replicas=1)  # and again: nothing to change
