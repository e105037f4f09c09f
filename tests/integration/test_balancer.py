"""resolve and report through a real nats-server, with the registry feeding the balancer."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import pytest
from conftest import Events, reg
from waiting import until

from schemas import subjects
from schemas.balancer import CallReport, Endpoint, ResolveRequest
from schemas.registry import Ack, Deregistration, Heartbeat
from services.errors import BadRequest, NotFound, Unavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from services.bus import Bus

    Register = Callable[..., Awaitable[None]]

pytestmark = pytest.mark.usefixtures("balancer")


async def resolve(bus: Bus, service: str = "api", **kw: Any) -> Endpoint:
    return await bus.request(subjects.resolve(service), ResolveRequest(**kw), Endpoint)


def member(balancer: Any, iid: str, service: str = "api") -> Any:
    """The balancer's view of an instance (None while it has none)."""
    pool = balancer.pools.get(service)
    return pool.members.get(iid) if pool else None


@pytest.fixture
def register(bus: Bus, events: Events, balancer: Any) -> Register:
    """Register an instance, and return once the balancer has it too."""

    async def register(iid: str, service: str = "api", **kw: Any) -> None:
        await bus.request(subjects.register(service), reg(iid, **kw), Ack)
        await events.wait_for("registered", iid)
        await until(lambda: member(balancer, iid, service))  # it follows the same event

    return register


async def test_weighted_is_smooth_and_exact(bus: Bus, events: Events, register: Register) -> None:
    for iid, w in (("a", 5), ("b", 1), ("c", 1)):
        await register(iid, weight=w)
    picks = [(await resolve(bus)).instance_id for _ in range(14)]
    assert "".join(picks) == "aabacaa" * 2


async def test_endpoint_carries_what_a_client_needs(
    bus: Bus, events: Events, register: Register
) -> None:
    await register("a", port=9001, zone="z1", metadata={"path": "/v2"})
    ep = await resolve(bus, strategy="round_robin")
    assert (ep.instance_id, ep.host, ep.port, ep.zone) == ("a", "127.0.0.1", 9001, "z1")
    assert ep.metadata == {"path": "/v2"}
    assert ep.strategy == "round_robin"
    assert ep.panic is False
    assert ep.pick


async def test_round_robin_rotates_and_exclude_skips(
    bus: Bus, events: Events, register: Register
) -> None:
    for iid in "abc":
        await register(iid)
    picks = [(await resolve(bus, strategy="round_robin")).instance_id for _ in range(6)]
    assert picks == list("abcabc")
    for _ in range(5):
        ep = await resolve(bus, strategy="random", exclude=["a", "b"])
        assert ep.instance_id == "c"


async def test_zone_is_preferred_while_it_has_a_healthy_instance(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    await register("eu", zone="eu")
    await register("us", zone="us")
    for _ in range(4):
        assert (await resolve(bus, zone="us", strategy="round_robin")).instance_id == "us"
    await bus.request(subjects.deregister("api"), Deregistration(instance_id="us"), Ack)
    await events.wait_for("deregistered", "us")
    await until(lambda: member(balancer, "us") is None)  # the balancer follows it too
    assert (await resolve(bus, zone="us")).instance_id == "eu"


async def test_consistent_hash_keeps_a_key_on_one_instance(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    for n in range(5):
        await register(f"n{n}")
    owners = {}
    for key in ("alice", "bob", "carol", "dave"):
        got = {
            (await resolve(bus, strategy="consistent_hash", key=key)).instance_id for _ in range(5)
        }
        assert len(got) == 1
        owners[key] = got.pop()
    gone = owners["alice"]
    await bus.request(subjects.deregister("api"), Deregistration(instance_id=gone), Ack)
    await events.wait_for("deregistered", gone)
    await until(lambda: member(balancer, gone) is None)  # lookups skip it from then on
    for key, owner in owners.items():
        now = (await resolve(bus, strategy="consistent_hash", key=key)).instance_id
        assert now != gone
        if owner != gone:
            assert now == owner  # keys of the other instances did not move


async def test_least_connections_counts_a_pick_until_its_report(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    for iid in "abc":
        await register(iid)
    first = [await resolve(bus, strategy="least_connections") for _ in range(3)]
    assert sorted(e.instance_id for e in first) == ["a", "b", "c"]  # each now has 1 in flight
    done = first[1]
    await bus.publish(
        subjects.report("api"),
        CallReport(instance_id=done.instance_id, latency_ms=3, pick=done.pick),
    )
    await until(lambda: member(balancer, done.instance_id).load == 0)  # the report is in
    assert (await resolve(bus, strategy="least_connections")).instance_id == done.instance_id


async def test_heartbeat_inflight_steers_least_connections(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    for iid in "ab":
        await register(iid)
    await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="a", inflight=10), Ack)
    await until(lambda: member(balancer, "a").load == 10)  # the balancer heard it too
    picks = [(await resolve(bus, strategy="least_connections")).instance_id for _ in range(8)]
    assert picks == ["b"] * 8  # b reaches 8 in flight, still below a's 10


async def test_least_response_time_avoids_the_slow_instance(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    for iid in "fs":
        await register(iid)
    for iid, ms in (("f", 10.0), ("s", 400.0)):
        await bus.publish(subjects.report("api"), CallReport(instance_id=iid, latency_ms=ms))
    await until(lambda: member(balancer, "f").sampled and member(balancer, "s").sampled)
    picks: collections.Counter[str] = collections.Counter()
    for _ in range(20):
        ep = await resolve(bus, strategy="least_response_time")
        picks[ep.instance_id] += 1
        await bus.publish(
            subjects.report("api"),
            CallReport(instance_id=ep.instance_id, latency_ms=10, pick=ep.pick),
        )
    assert picks["f"] == 20


async def test_most_connections_packs_until_capacity(
    bus: Bus, events: Events, register: Register
) -> None:
    for iid in "ab":
        await register(iid, metadata={"max_inflight": "3"})
    picks = [(await resolve(bus, strategy="most_connections")).instance_id for _ in range(6)]
    assert picks[:3] == [picks[0]] * 3  # packed onto one until it is full
    assert picks[3:] == [picks[3]] * 3
    assert picks[3] != picks[0]
    with pytest.raises(Unavailable, match="max_inflight"):
        await resolve(bus, strategy="most_connections")


async def test_unknown_service_is_404(bus: Bus) -> None:
    with pytest.raises(NotFound, match="'ghost' has no registered instances"):
        await resolve(bus, "ghost")


async def test_no_healthy_instance_is_503(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    await register("a", ttl_s=1)
    await events.wait_for("unhealthy", "a", timeout=3)
    await until(lambda: not member(balancer, "a").healthy)  # the balancer follows it too
    with pytest.raises(Unavailable, match="1 unhealthy"):
        await resolve(bus)


async def test_weight_zero_is_never_picked(bus: Bus, events: Events, register: Register) -> None:
    await register("zero", weight=0)
    with pytest.raises(Unavailable, match="1 with weight 0"):
        await resolve(bus, strategy="random")
    await register("one")
    assert {(await resolve(bus, strategy="random")).instance_id for _ in range(10)} == {"one"}


@pytest.mark.parametrize(
    ("request_kw", "says"),
    [
        ({"strategy": "fastest"}, "unknown strategy 'fastest'; use one of random, round_robin"),
        ({"strategy": "consistent_hash"}, "consistent_hash needs a `key`"),
        ({"exclude": ["bad id"]}, "exclude must be a list of at most 1024 instance ids"),
    ],
)
async def test_bad_resolve_is_400(
    bus: Bus, events: Events, request_kw: Any, says: str, register: Register
) -> None:
    await register("a")
    with pytest.raises(BadRequest, match=says):
        await resolve(bus, **request_kw)
    assert (await resolve(bus)).instance_id == "a"  # still serving


async def test_bad_report_is_counted_and_dropped(
    bus: Bus, events: Events, balancer: Any, register: Register
) -> None:
    await register("a")
    await bus.nc.publish(subjects.report("api"), b'{"instance_id":"a","latency_ms":-1}')
    await bus.nc.publish(subjects.report("api"), b"garbage")
    # a later report on the same subscription is handled, so both bad ones were seen
    await bus.publish(subjects.report("api"), CallReport(instance_id="a", latency_ms=1))
    await until(lambda: sum(n for (s, code), n in balancer.bus.errors.items() if code == 400) >= 2)
    assert sum(n for (s, code), n in balancer.bus.errors.items() if code == 400) == 2
    assert (await resolve(bus)).instance_id == "a"
