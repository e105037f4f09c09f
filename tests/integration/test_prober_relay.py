"""The registry hears only what can change health: transitions, and a refresh now and then.

A real nats-server, the real registry and prober; the test follows both
`prober.v1.results` (every run) and `prober.v1.transitions` (what the registry follows).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from aiohttp import web
from barrier import subscribed
from waiting import until
from workers import run_prober

from schemas import subjects
from schemas.checks import CheckDefinition, CheckResult
from schemas.registry import Ack, Empty, Instance, InstanceList, Registration

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer

    from services.bus import Bus

pytestmark = pytest.mark.usefixtures("registry")


class Seen:
    """Every result published on one subject tree, in order."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    async def on_msg(self, msg: Any) -> None:
        self.results.append(msgspec.json.decode(msg.data, type=CheckResult))


@contextlib.asynccontextmanager
async def follow(nc: Client, root: str) -> AsyncIterator[Seen]:
    seen = Seen()
    sub = await nc.subscribe(subjects.every(root), cb=seen.on_msg)
    await subscribed(nc)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def health_target() -> AsyncIterator[tuple[dict[str, int], int]]:
    """An HTTP /health answering the code the test sets; yields (state, port)."""
    state = {"code": 200}

    async def health(_request: web.Request) -> web.Response:
        return web.Response(status=state["code"], text=f"status {state['code']}")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state, port
    finally:
        await runner.cleanup()


async def register(bus: Bus, port: int) -> None:
    check = msgspec.convert(
        {
            "check_id": "http",
            "kind": "http",
            "target": f"http://127.0.0.1:{port}/health",
            "interval_s": 0.1,
            "timeout_s": 1.0,
        },
        CheckDefinition,
    )
    reg = Registration(instance_id="web-1", host="127.0.0.1", port=port, checks=[check])
    await bus.request(subjects.register("web"), reg, Ack)


async def listed(bus: Bus) -> Instance:
    found = await bus.request(subjects.instances("web"), Empty(), InstanceList)
    (instance,) = found.instances
    return instance


async def test_a_steady_check_tells_the_registry_nothing_until_it_changes(
    nats_server: NatsServer, nc: Client, bus: Bus
) -> None:
    async with (
        follow(nc, subjects.PROBER_RESULTS) as runs,
        follow(nc, subjects.PROBER_TRANSITIONS) as told,
        health_target() as (state, port),
        run_prober(nats_server.url, refresh_s=3600.0) as prober,
    ):
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        await register(bus, port)
        await until(lambda: [r.status for r in told.results] == ["passing"], 10, what="passing")
        assert told.results[0].previous == "critical"  # a check starts critical, as Consul
        first = len(runs.results)
        # five more runs: each went out on results before its transition would have, so
        # any transition of theirs has arrived by now
        await until(lambda: len(runs.results) >= first + 5, 10, what="five more runs")
        assert [r.status for r in runs.results[first:]] == ["passing"] * len(runs.results[first:])
        assert len(told.results) == 1  # the registry heard nothing of the steady runs
        assert (await listed(bus)).check_states[0].status == "passing"

        state["code"] = 503
        await until(lambda: len(told.results) == 2, 10, what="the transition")
        change = told.results[1]
        assert (change.previous, change.status) == ("passing", "critical")
        assert "503" in change.output
        instance = await listed(bus)
        assert not instance.healthy
        assert "503" in instance.check_states[0].output


async def test_a_steady_check_is_refreshed_so_a_lost_transition_heals(
    nats_server: NatsServer, nc: Client, bus: Bus
) -> None:
    async with (
        follow(nc, subjects.PROBER_TRANSITIONS) as told,
        health_target() as (_state, port),
        run_prober(nats_server.url, refresh_s=0.3) as prober,
    ):
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        await register(bus, port)

        def refreshed() -> bool:
            return any(r.previous == r.status == "passing" for r in told.results)

        await until(refreshed, 10, what="a refresh of a passing check")
        assert [r.status for r in told.results] == ["passing"] * len(told.results)
