"""Untracked picks (ResolveRequest.track = false), as the gateway's DNS answers make them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from conftest import Events, reg
from waiting import until

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Ack

if TYPE_CHECKING:
    from services.bus import Bus


async def resolve(bus: Bus, **kw: Any) -> Endpoint:
    return await bus.request(subjects.resolve("api"), ResolveRequest(**kw), Endpoint)


@pytest.fixture
async def two(bus: Bus, events: Events, balancer: Any) -> Any:
    for iid in "ab":
        await bus.request(subjects.register("api"), reg(iid), Ack)
        await events.wait_for("registered", iid)
    await until(lambda: len(balancer.pools["api"].members) == 2, ignoring=(KeyError,))
    return balancer


async def test_untracked_pick_leaves_nothing_in_flight(bus: Bus, two: Any) -> None:
    members = two.pools["api"].members
    picks = [await resolve(bus, strategy="least_connections", track=False) for _ in range(6)]
    assert {p.pick for p in picks} == {""}  # no token: nobody will report it
    assert members["a"].load == members["b"].load == 0
    # so least_connections keeps the same instance first, where tracked picks spread
    assert {p.instance_id for p in picks} == {"a"}
    tracked = [await resolve(bus, strategy="least_connections") for _ in range(2)]
    assert all(p.pick for p in tracked)
    assert {p.instance_id for p in tracked} == {"a", "b"}
    assert members["a"].load + members["b"].load == 2


async def test_tracked_is_the_default(bus: Bus, two: Any) -> None:
    assert ResolveRequest().track is True
    ep = await resolve(bus)
    assert ep.pick
    assert sum(m.load for m in two.pools["api"].members.values()) == 1
