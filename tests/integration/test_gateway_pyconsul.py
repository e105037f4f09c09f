"""py-consul (PyPI, not ours) against the gateway: a TTL-checked service lives and dies
exactly as a NATS service does."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from conftest import reg
from httpgateway import stack
from waiting import until

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Ack, Heartbeat, InstanceList, InstancesQuery
from services.errors import BatonError

consul = pytest.importorskip(
    "consul", reason="py-consul is in the dev extra: pip install -e .[dev]"
)

if TYPE_CHECKING:
    from conftest import Events
    from natsserver import NatsServer

    from services.bus import Bus


async def _keep_passing(client: Any, check_id: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(client.agent.check.ttl_pass, check_id, "alive")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


async def _keep_beating(bus: Bus, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await bus.request(subjects.heartbeat("web"), Heartbeat(instance_id="nats-1"), Ack)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


async def test_ttl_pass_keeps_it_alive_and_silence_expires_it(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    async with stack(nats_server.url) as http:
        client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
        registered = await asyncio.to_thread(
            client.agent.service.register,
            "web",
            service_id="web-1",
            address="127.0.0.1",
            port=8001,
            tags=["blue"],
            check=consul.Check.ttl("1s"),
        )
        assert registered is True
        # a NATS service beside it, with the same lease, for comparison
        await bus.request(subjects.register("web"), reg("nats-1", port=8002, ttl_s=1.0), Ack)
        stop = asyncio.Event()
        passing = asyncio.ensure_future(_keep_passing(client, "service:web-1", stop))
        beating = asyncio.ensure_future(_keep_beating(bus, stop))
        try:

            async def both_healthy() -> bool:
                _, nodes = await asyncio.to_thread(client.health.service, "web", passing=True)
                return sorted(n["Service"]["ID"] for n in nodes) == ["nats-1", "web-1"]

            await until(both_healthy, timeout=10)
            # resolvable over NATS, and listed by the registry, for longer than its TTL
            picked = set()
            for _ in range(20):
                endpoint = await bus.request(
                    subjects.resolve("web"), ResolveRequest(exclude=["nats-1"]), Endpoint
                )
                picked.add((endpoint.instance_id, endpoint.port))
            assert picked == {("web-1", 8001)}
            await events.wait_for("registered", "web-1")
            listed = await bus.request(subjects.instances("web"), InstancesQuery(), InstanceList)
            mine = {i.instance_id: i for i in listed.instances}["web-1"]
            assert mine.healthy
            assert mine.ttl_s == 1.0
            index, services = await asyncio.to_thread(client.catalog.services)
            assert services == {"web": ["blue"]}
            assert int(index) >= 1
        finally:
            stop.set()
            await asyncio.gather(passing, beating)
        # silence: unhealthy after the TTL, then expired, as the NATS instance
        for instance in ("web-1", "nats-1"):
            await events.wait_for("unhealthy", instance)
            await events.wait_for("expired", instance)
        assert events.kinds("web-1")[-2:] == events.kinds("nats-1")[-2:] == ["unhealthy", "expired"]

        async def gone() -> bool:
            _, nodes = await asyncio.to_thread(client.health.service, "web")
            return not nodes

        await until(gone, timeout=10)
        # a pass after expiry registers it again, as Baton's SDK does on a 404
        await asyncio.to_thread(client.agent.check.ttl_pass, "service:web-1")

        async def back() -> bool:
            with contextlib.suppress(BatonError):
                found = await bus.request(subjects.resolve("web"), ResolveRequest(), Endpoint)
                return found.instance_id == "web-1"
            return False

        await until(back, timeout=10)
        assert await asyncio.to_thread(client.agent.service.deregister, "web-1") is True


async def test_a_blocking_watch_wakes_on_change_and_returns_at_its_wait(
    nats_server: NatsServer, bus: Bus
) -> None:
    """py-consul's blocking query (index + wait), the way watchers (Prometheus) use it."""
    async with stack(nats_server.url) as http:
        client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
        index, nodes = await asyncio.to_thread(client.health.service, "api")
        assert nodes == []
        # nothing changes: back at its wait with the same index
        again, nodes = await asyncio.to_thread(
            client.health.service, "api", index=index, wait="300ms"
        )
        assert (again, nodes) == (index, [])
        watch = asyncio.ensure_future(
            asyncio.to_thread(client.health.service, "api", index=index, wait="60s")
        )
        await asyncio.sleep(0.1)  # a short wait for what must NOT happen: an early answer
        assert not watch.done()
        await bus.request(subjects.register("api"), reg("api-1", port=9001), Ack)
        grown, nodes = await asyncio.wait_for(watch, 10)
        assert int(grown) > int(index)
        assert [(n["Service"]["ID"], n["Service"]["Port"]) for n in nodes] == [("api-1", 9001)]
