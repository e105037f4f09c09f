"""Batched call reports through a real nats-server: the SDK's batches, the balancer's view."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from barrier import subscribed
from conftest import Events, reg
from waiting import until

from schemas import subjects
from schemas.balancer import BatchedReport, CallReport, CallReports, Endpoint, ResolveRequest
from schemas.registry import Ack
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from services.bus import Bus

SERVICE = "shop"
pytestmark = pytest.mark.usefixtures("balancer")


class Wire:
    """What went out on balancer.v1.report.> and balancer.v1.reports.>, as received."""

    def __init__(self) -> None:
        self.single: list[CallReport] = []
        self.batches: list[list[BatchedReport]] = []

    async def on_single(self, msg: Msg) -> None:
        self.single.append(msgspec.json.decode(msg.data, type=CallReport))

    async def on_batch(self, msg: Msg) -> None:
        self.batches.append(msgspec.json.decode(msg.data, type=CallReports).reports)

    @property
    def batched(self) -> list[BatchedReport]:
        return [r for b in self.batches for r in b]


@pytest.fixture
async def wire(nc: Client) -> AsyncIterator[Wire]:
    seen = Wire()
    subs = [
        await nc.subscribe(subjects.every(subjects.REPORT), cb=seen.on_single),
        await nc.subscribe(subjects.every(subjects.REPORTS), cb=seen.on_batch),
    ]
    await subscribed(nc)
    yield seen
    for sub in subs:
        await sub.unsubscribe()


async def fleet(bus: Bus, events: Events, balancer: Any, ids: list[str]) -> None:
    for n, iid in enumerate(ids):
        await bus.request(subjects.register(SERVICE), reg(iid, port=9000 + n), Ack)
        await events.wait_for("registered", iid)
    await until(
        lambda: SERVICE in balancer.pools and set(ids) <= set(balancer.pools[SERVICE].members),
        what="the balancer to know the fleet",
    )


def open_picks(balancer: Any) -> int:
    return sum(len(m.open) for m in balancer.pools[SERVICE].members.values())


async def test_single_and_batched_reports_both_close_their_picks(
    nc: Client, bus: Bus, events: Events, balancer: Any, wire: Wire
) -> None:
    await fleet(bus, events, balancer, ["a", "b"])
    batched = BalancerClient(nc, batch_ms=20)
    single = BalancerClient(nc, batch_ms=0)  # another client, reporting the old way
    eps = [
        await bus.request(
            subjects.resolve(SERVICE), ResolveRequest(strategy="round_robin"), Endpoint
        )
        for _ in range(40)
    ]
    assert open_picks(balancer) == 40
    for n, ep in enumerate(eps):
        client = batched if n % 2 else single
        await client.report(SERVICE, ep, 5.0, ok=n % 7 != 0)
    await batched.aclose()
    await until(lambda: open_picks(balancer) == 0, what="every pick closed by its report")
    await until(lambda: len(wire.single) + len(wire.batched) == 40, what="all 40 on the wire")
    assert len(wire.single) == 20
    assert len(wire.batched) == 20
    assert len(wire.batches) < 20  # batched, not one message each
    assert {r.pick for r in wire.single + wire.batched} == {ep.pick for ep in eps}
    failed = [r.pick for r in wire.single + wire.batched if not r.ok]
    assert sorted(failed) == sorted(ep.pick for n, ep in enumerate(eps) if n % 7 == 0)


async def test_a_full_batch_goes_at_once_and_the_rest_on_exit(
    nc: Client, bus: Bus, events: Events, balancer: Any, wire: Wire
) -> None:
    await fleet(bus, events, balancer, ["a"])
    ep = await bus.request(subjects.resolve(SERVICE), ResolveRequest(), Endpoint)
    async with BalancerClient(nc, batch_ms=60_000, batch_max=10) as client:
        for _ in range(25):
            await client.report(SERVICE, ep, 1.0)
        await nc.flush()
        await until(lambda: len(wire.batches) == 2, what="two full batches, without the timer")
        assert [len(b) for b in wire.batches] == [10, 10]
    # leaving the block sent the last five, though a minute had not passed
    await until(lambda: len(wire.batched) == 25, what="the last five on exit")
    assert [len(b) for b in wire.batches] == [10, 10, 5]
    assert client.sent == 25


async def test_the_timer_sends_a_lone_report_promptly(
    nc: Client, bus: Bus, events: Events, balancer: Any, wire: Wire
) -> None:
    await fleet(bus, events, balancer, ["a"])
    ep = await bus.request(subjects.resolve(SERVICE), ResolveRequest(), Endpoint)
    assert open_picks(balancer) == 1
    client = BalancerClient(nc, batch_ms=5)
    await client.report(SERVICE, ep, 1.0)
    await until(lambda: open_picks(balancer) == 0, what="the pick closed by the timer's batch")
    assert [len(b) for b in wire.batches] == [1]


async def test_thousands_of_reports_none_dropped(
    nc: Client, bus: Bus, events: Events, balancer: Any, wire: Wire
) -> None:
    ids = [f"i{n}" for n in range(10)]
    await fleet(bus, events, balancer, ids)
    req = ResolveRequest(strategy="round_robin")
    eps = await asyncio.gather(
        *(bus.request(subjects.resolve(SERVICE), req, Endpoint) for _ in range(3000))
    )
    assert open_picks(balancer) == 3000
    async with BalancerClient(nc) as client:
        for ep in eps:
            await client.report(SERVICE, ep, 2.0)
    await until(lambda: len(wire.batched) == 3000, what="every report on the wire", timeout=10)
    await until(lambda: open_picks(balancer) == 0, what="every pick closed", timeout=10)
    assert len({r.pick for r in wire.batched}) == 3000
    assert max(len(b) for b in wire.batches) <= client.batch_max


async def test_a_bad_batch_is_a_counted_400_and_loses_nothing_else(
    nc: Client, bus: Bus, events: Events, balancer: Any
) -> None:
    await fleet(bus, events, balancer, ["a"])
    ep = await bus.request(subjects.resolve(SERVICE), ResolveRequest(), Endpoint)
    reply = await nc.request(
        subjects.reports(SERVICE), b'{"reports":[{"instance_id":"a","latency_ms":-1}]}', timeout=2
    )
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert "latency_ms must be a number >= 0" in reply.headers["Nats-Service-Error"]
    errors = balancer.bus.errors
    assert errors[(subjects.every(subjects.REPORTS), 400)] == 1
    # an id that breaks the name rule costs only its own report: counted, the rest applied
    mixed = CallReports(
        reports=[
            BatchedReport(instance_id="not valid", latency_ms=1),
            BatchedReport(instance_id="a", latency_ms=1, pick=ep.pick),
        ]
    )
    await bus.publish(subjects.reports(SERVICE), mixed)
    await until(lambda: open_picks(balancer) == 0, what="the good report applied")
    assert errors[(subjects.every(subjects.REPORTS), 400)] == 2
