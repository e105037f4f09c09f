"""The gateway's registry view: fed like the balancer's, with an index to block on."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from conftest import Events, reg
from waiting import until
from workers import run_gateway, run_governor

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack, Deregistration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

    from services.bus import Bus
    from services.view import RegistryView

pytestmark = pytest.mark.usefixtures("registry")


@pytest.fixture
async def view(nats_server: NatsServer) -> AsyncIterator[RegistryView]:
    async with run_governor(nats_server.url), run_gateway(nats_server.url) as gw:
        await asyncio.wait_for(gw.view.synced.wait(), 5)
        yield gw.view


async def test_instances_and_index_follow_the_registry(
    bus: Bus, events: Events, view: RegistryView
) -> None:
    start = view.index
    assert start >= 1
    await bus.request(subjects.register("api"), reg("a", port=9001, zone="z1"), Ack)
    await bus.request(subjects.register("api"), reg("b", port=9002), Ack)
    await until(lambda: len(view.known().get("api", ())) == 2)
    state = view.service("api")
    assert state is not None
    assert {i.instance_id: i.port for i in state.instances.values()} == {"a": 9001, "b": 9002}
    assert view.index > start
    assert state.index == view.service_index("api") > start
    serving, panic = state.serving("z1")
    assert [i.instance_id for i in serving] == ["a"]
    assert panic is False
    before = view.index
    await bus.request(subjects.deregister("api"), Deregistration(instance_id="a"), Ack)
    await events.wait_for("deregistered", "a")
    await until(lambda: view.index > before)
    assert set(view.known()["api"]) == {"b"}


async def test_wait_answers_at_a_change_not_at_its_timeout(bus: Bus, view: RegistryView) -> None:
    now = view.service_index("api")
    waiter = asyncio.create_task(view.wait(now, 300.0, service="api"))
    await asyncio.sleep(0)  # the waiter is parked
    assert not waiter.done()
    await bus.request(subjects.register("api"), reg("a"), Ack)
    got = await asyncio.wait_for(waiter, 30)  # only a guard: its own timeout is 300 s
    assert got > now  # woken by the change, with the index that says so
    # no change: the wait ends at its timeout with the same index
    assert await view.wait(got, 0.05, service="api") == got


async def test_overrides_and_config_are_in_the_view(bus: Bus, view: RegistryView) -> None:
    await bus.request(subjects.register("api"), reg("a", weight=50), Ack)
    await until(lambda: "api" in view.services)
    before = view.service_index("api")
    change = ConfigChange(
        actor="ann",
        strategy="round_robin",
        protect_threshold=0.5,
        instances={"a": OverridePatch(weight=7, drained=True)},
    )
    await bus.request(subjects.change("api"), change, ConfigApplied)
    state = view.services["api"]
    await until(lambda: state.config.strategy == "round_robin" and state.instances["a"].drained)
    assert state.config.protect_threshold == 0.5
    assert state.weight(state.instances["a"]) == 7
    assert state.serving() == ([], False)  # drained: takes no traffic
    assert view.service_index("api") > before
