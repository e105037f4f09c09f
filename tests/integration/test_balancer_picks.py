"""What the balancer keeps per pick: the counts it publishes, and picks never reported."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import msgspec
from conftest import reg
from waiting import until
from workers import run_balancer

from schemas import subjects
from schemas.balancer import Endpoint, PickCounts, ResolveRequest
from schemas.registry import Ack
from services.balancer import BalancerSettings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from natsserver import NatsServer

    from services.bus import Bus


async def resolve(bus: Bus, **kw: Any) -> Endpoint:
    return await bus.request(subjects.resolve("api"), ResolveRequest(**kw), Endpoint)


def member(balancer: Any, iid: str) -> Any:
    pool = balancer.pools.get("api")
    return pool.members.get(iid) if pool else None


async def test_pick_counts_add_up_to_the_resolves_per_instance_and_strategy(
    nats_server: NatsServer, registry: Any, bus: Bus, nc: Client
) -> None:
    published: collections.Counter[tuple[str, str]] = collections.Counter()

    async def on_msg(msg: Any) -> None:
        counts = msgspec.json.decode(msg.data, type=PickCounts)
        for p in counts.picks:
            published[p.instance_id, p.strategy] += p.count

    await nc.subscribe(subjects.picks("api"), cb=on_msg)
    async with run_balancer(nats_server.url, BalancerSettings(picks_s=0.05)) as balancer:
        await bus.request(subjects.register("api"), reg("a"), Ack)
        await bus.request(subjects.register("api"), reg("b"), Ack)
        await until(lambda: member(balancer, "a") and member(balancer, "b"))
        given: collections.Counter[tuple[str, str]] = collections.Counter()
        requests: list[dict[str, Any]] = [{}, {}, {"strategy": "round_robin"}, {"track": False}]
        for kw in requests:
            ep = await resolve(bus, **kw)
            given[ep.instance_id, ep.strategy] += 1
        await until(lambda: sum(published.values()) >= sum(given.values()))
        assert published == given
        # counted afresh each interval; a member that changes is encoded anew, and what
        # it was given meanwhile still counts
        await bus.request(subjects.register("api"), reg("a", weight=50), Ack)
        await until(lambda: member(balancer, "a").weight == 50)
        for _ in range(4):
            ep = await resolve(bus)
            given[ep.instance_id, ep.strategy] += 1
        await until(lambda: sum(published.values()) >= sum(given.values()))
        assert published == given


async def test_a_pick_never_reported_stops_counting_in_flight_after_pick_timeout(
    nats_server: NatsServer, registry: Any, bus: Bus
) -> None:
    settings = BalancerSettings(pick_timeout_s=0.2)
    async with run_balancer(nats_server.url, settings) as balancer:
        await bus.request(subjects.register("api"), reg("a"), Ack)
        await until(lambda: member(balancer, "a"))
        await resolve(bus, track=False)  # nobody will report it: never in flight
        assert member(balancer, "a").load == 0
        for _ in range(3):
            await resolve(bus)
        assert member(balancer, "a").load == 3
        await until(lambda: member(balancer, "a").load == 0, what="the picks timed out")
        assert not member(balancer, "a").open
