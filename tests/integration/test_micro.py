"""Every worker answers the NATS services protocol (ADR-32): `$SRV.PING`, `$SRV.INFO` and
`$SRV.STATS` at all three levels, read here with nats-py's own `nats.micro` parsers and
compared, key for key, with what a nats-py `nats.micro` service answers beside them.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import msgspec
import nats.micro
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats
from waiting import until
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.balancer import ResolveRequest
from schemas.registry import Ack, Registration
from services.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nats.aio.client import Client
    from nats.micro.request import Request
    from natsserver import NatsServer

    from services.bus import Bus

REPLICAS = 2  # balancers


async def gather(
    nc: Client, subject: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 5
) -> list[dict[str, Any]]:
    """Every reply to one request on `subject`, until `done(replies)` holds."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await nc.publish(subject, b"", reply=inbox)

        async def loop() -> None:
            while not done(replies):
                msg = await sub.next_msg(timeout=None)
                replies.append(json.loads(msg.data))

        await asyncio.wait_for(loop(), timeout)
    finally:
        await sub.unsubscribe()
    return replies


def names(replies: list[dict[str, Any]]) -> list[str]:
    return sorted(r["name"] for r in replies)


@pytest.fixture
async def fleet(nats_server: NatsServer) -> AsyncIterator[list[Any]]:
    """A registry, two balancer replicas and a governor, each announced."""
    url = nats_server.url
    async with AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(run_registry(url))]
        for _ in range(REPLICAS):
            balancer = await stack.enter_async_context(run_balancer(url))
            await asyncio.wait_for(balancer.sync.synced.wait(), 5)
            workers.append(balancer)
        workers.append(await stack.enter_async_context(run_governor(url)))
        yield workers


EXPECTED = sorted(["baton-registry", "baton-governor"] + ["baton-balancer"] * REPLICAS)


@pytest.mark.usefixtures("fleet")
async def test_ping_at_every_level_gets_one_reply_per_replica(nc: Client) -> None:
    everyone = await gather(nc, subjects.srv("PING"), lambda r: len(r) >= len(EXPECTED))
    assert names(everyone) == EXPECTED
    for reply in everyone:
        ping = ServicePing.from_dict(reply)  # nats-py's own reading of the reply
        assert ping.type == "io.nats.micro.v1.ping_response"
        assert ping.version == importlib.metadata.version("baton")  # pyproject's
        assert re.fullmatch(r"\d+\.\d+\.\d+(?:[-+].*)?", ping.version)  # SemVer
        assert reply["metadata"]["pid"].isdigit()
    ids = [r["id"] for r in everyone]
    assert len(set(ids)) == len(ids)  # unique per process, even in one process

    balancers = await gather(
        nc, subjects.srv("PING", "baton-balancer"), lambda r: len(r) >= REPLICAS
    )
    assert names(balancers) == ["baton-balancer"] * REPLICAS
    for reply in everyone:
        one = await nc.request(subjects.srv("PING", reply["name"], reply["id"]), b"", timeout=2)
        assert json.loads(one.data) == reply


@pytest.mark.usefixtures("fleet")
async def test_info_lists_the_real_subjects_and_queue_groups(nc: Client) -> None:
    replies = await gather(nc, subjects.srv("INFO"), lambda r: len(r) >= len(EXPECTED))
    by_name = {r["name"]: r for r in replies}
    for reply in replies:
        info = ServiceInfo.from_dict(reply)
        assert info.type == "io.nats.micro.v1.info_response"
        assert info.description  # the worker's own one-line summary
    balancer = {e["name"]: e for e in by_name["baton-balancer"]["endpoints"]}
    assert balancer["resolve"]["subject"] == "balancer.v1.resolve.>"
    assert balancer["resolve"]["queue_group"] == "balancer"
    assert balancer["resolve"]["metadata"] == {"payload": "ResolveRequest", "replies": "true"}
    assert balancer["heartbeat"]["queue_group"] == ""  # every replica follows the load
    assert balancer["heartbeat"]["metadata"]["replies"] == "false"
    registry = {e["subject"]: e["queue_group"] for e in by_name["baton-registry"]["endpoints"]}
    assert "registry.v1.register.>" in registry
    governor = {e["name"] for e in by_name["baton-governor"]["endpoints"]}
    assert governor == {"change", "config", "history", "rollback"}


async def test_stats_count_requests_and_errors(nats_server: NatsServer, bus: Bus) -> None:
    async with run_registry(nats_server.url), run_balancer(nats_server.url) as balancer:
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        await bus.request(
            subjects.register("api"), Registration(instance_id="a", host="h", port=1), Ack
        )

        async def resolve_stats() -> dict[str, Any]:
            [reply] = await gather(
                bus.nc, subjects.srv("STATS", "baton-balancer"), lambda r: len(r) >= 1
            )
            ServiceStats.from_dict(reply)  # nats-py parses `started` and every endpoint
            [resolve] = [e for e in reply["endpoints"] if e["name"] == "resolve"]
            return dict(resolve)

        before = await resolve_stats()
        assert before["num_requests"] == 0
        assert before["last_error"] == ""

        async def resolved() -> bool:
            try:
                await bus.request(subjects.resolve("api"), ResolveRequest(), msgspec.Raw)
            except NotFound:  # the balancer has not seen the registration yet
                return False
            return True

        await until(resolved, what="the balancer to resolve api")
        tries = (await resolve_stats())["num_requests"]
        errors = (await resolve_stats())["num_errors"]
        for _ in range(3):
            await bus.request(subjects.resolve("api"), ResolveRequest(), msgspec.Raw)
        bad = await bus.nc.request(subjects.resolve("api"), b'{"key": 7}', timeout=2)
        assert bad.headers
        assert bad.headers["Nats-Service-Error-Code"] == "400"

        after = await resolve_stats()
        assert after["num_requests"] == tries + 4
        assert after["num_errors"] == errors + 1
        assert after["last_error"].startswith("400:")
        assert "key" in after["last_error"]
        assert after["processing_time"] > before["processing_time"]
        assert after["average_processing_time"] == after["processing_time"] // (tries + 4)


async def test_replies_have_the_shape_of_a_nats_py_micro_service(
    nats_server: NatsServer, nc: Client
) -> None:
    async def echo(request: Request) -> None:
        await request.respond(request.data)

    async with (
        run_registry(nats_server.url),
        await nats.micro.add_service(
            nc, name="reference", version="1.0.0", description="nats-py's own"
        ) as reference,
    ):
        await reference.add_endpoint(name="echo", subject="ref.echo", handler=echo)
        for verb in ("PING", "INFO", "STATS"):
            replies = await gather(nc, subjects.srv(verb), lambda r: len(r) >= 2)
            ours, theirs = sorted(replies, key=lambda r: r["name"] != "baton-registry")
            assert ours["type"] == theirs["type"]
            assert set(ours) == set(theirs), verb
            if verb != "PING":
                assert set(ours["endpoints"][0]) == set(theirs["endpoints"][0]), verb
