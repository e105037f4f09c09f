"""Faults a control plane must ride out: crashes, restarts, lost events, a NATS outage."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from conftest import Events, reg
from waiting import until
from workers import run_balancer, run_registry

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Ack, Heartbeat, Instance, InstanceEvent
from services.errors import BatonError, NotFound
from services.registry import RegistrySettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

    from services.bus import Bus

# A service in its own process: registers, then heartbeats every 0.2 s and prints the
# wall-clock time of each acknowledged heartbeat, until it is killed.
SERVICE = """
import asyncio, sys, time, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    await nc.request("registry.v1.register.api",
        b'{"instance_id":"victim","host":"127.0.0.1","port":9999,"ttl_s":1}', timeout=2)
    while True:
        await nc.request("registry.v1.heartbeat.api", b'{"instance_id":"victim"}', timeout=2)
        print(time.time(), flush=True)
        await asyncio.sleep(0.2)  # its heartbeat interval
asyncio.run(main())
"""


async def resolve(bus: Bus, **kw: Any) -> Endpoint:
    return await bus.request(subjects.resolve("api"), ResolveRequest(**kw), Endpoint, timeout=1)


@contextlib.asynccontextmanager
async def heartbeating(bus: Bus, iid: str, *, ttl_s: float = 1.0) -> AsyncIterator[list[int]]:
    """An instance kept alive as the SDK does: heartbeat, and register again on a 404."""
    registrations = [0]

    async def loop() -> None:
        await bus.request(subjects.register("api"), reg(iid, ttl_s=ttl_s), Ack)
        while True:
            try:
                await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id=iid), Ack)
            except NotFound:
                await bus.request(subjects.register("api"), reg(iid, ttl_s=ttl_s), Ack)
                registrations[0] += 1
            except BatonError:
                pass  # the registry or NATS is away; the next beat tries again
            await asyncio.sleep(ttl_s / 5)  # the heartbeat interval, as an SDK keeps it

    task = asyncio.create_task(loop())
    try:
        yield registrations
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.usefixtures("balancer")
async def test_killed_service_stops_being_resolved_within_ttl_plus_1s(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220, S603  # a real process, to kill for real
        [sys.executable, "-c", SERVICE, nats_server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        async with heartbeating(bus, "steady", ttl_s=1):
            await events.wait_for("registered", "victim", timeout=10)
            await events.wait_for("registered", "steady", timeout=10)
            assert proc.stdout is not None
            first = await asyncio.to_thread(proc.stdout.readline)  # it has heartbeated once

            async def victim_resolved() -> bool:  # the balancer has it too
                eps = [await resolve(bus, strategy="round_robin") for _ in range(2)]
                return "victim" in {ep.instance_id for ep in eps}

            await until(victim_resolved)
            proc.kill()  # SIGKILL: no deregistration
            beats = [first, *(await asyncio.to_thread(proc.stdout.read)).split()]
            last_beat = float(beats[-1])
            last_resolved = 0.0
            deadline = time.time() + 3.0
            while time.time() < deadline:
                ep = await resolve(bus, strategy="round_robin")
                if ep.instance_id == "victim":
                    last_resolved = time.time()
                await asyncio.sleep(0.01)  # pacing the resolves over the window
            assert last_resolved > 0  # it was being resolved while alive
            assert last_resolved - last_beat <= 1.0 + 1.0
            await events.wait_for("unhealthy", "victim")
            await events.wait_for("expired", "victim")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


async def test_balancer_started_late_knows_the_fleet_and_never_serves_the_removed(
    nats_server: NatsServer, bus: Bus, events: Events, registry: Any
) -> None:
    for iid in "abc":
        await bus.request(subjects.register("api"), reg(iid), Ack)
    async with run_balancer(nats_server.url) as balancer:
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        got = {(await resolve(bus, strategy="round_robin")).instance_id for _ in range(6)}
        assert got == {"a", "b", "c"}
    await bus.request(subjects.deregister("api"), reg("b"), Ack)  # while no balancer runs
    async with run_balancer(nats_server.url) as balancer:
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        got = {(await resolve(bus, strategy="round_robin")).instance_id for _ in range(6)}
        assert got == {"a", "c"}


@pytest.mark.usefixtures("registry")
async def test_a_missed_event_is_repaired_by_a_snapshot(
    nats_server: NatsServer, bus: Bus, events: Events, registry: Any
) -> None:
    async with run_balancer(nats_server.url) as balancer:
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        await bus.request(subjects.register("api"), reg("real"), Ack)
        await events.wait_for("registered", "real")
        before = balancer.sync.snapshots
        # A forged event that skips sequence numbers: as if events had been lost.
        ghost = Instance(
            **{
                **{
                    f: getattr(reg("ghost"), f)
                    for f in ("host", "port", "weight", "zone", "version", "metadata")
                },
                "instance_id": "ghost",
                "healthy": True,
                "drained": False,
                "inflight": 0,
                "registered_at": events.seen[0].at,
                "last_seen": events.seen[0].at,
            }
        )
        await bus.publish(
            subjects.events("api"),
            InstanceEvent(
                kind="registered",
                service="api",
                instance=ghost,
                at=ghost.last_seen,
                epoch=registry.epoch,
                seq=registry.seq + 5,
            ),
        )
        await until(lambda: balancer.sync.snapshots != before)
        picks = {(await resolve(bus, strategy="round_robin")).instance_id for _ in range(4)}
        assert picks == {"real"}  # the snapshot removed what the registry does not hold


@pytest.mark.usefixtures("balancer")
async def test_registry_restart_keeps_traffic_flowing_without_spurious_events(
    nats_server: NatsServer, bus: Bus, events: Events, registry: Any
) -> None:
    settings = RegistrySettings(sweep_s=0.02, settle_s=1.0)
    async with heartbeating(bus, "a") as reg_a, heartbeating(bus, "b") as reg_b:
        await events.wait_for("registered", "a")
        await events.wait_for("registered", "b")

        async def both_resolved() -> bool:  # the balancer has heard both events too
            picks = {(await resolve(bus, strategy="round_robin")).instance_id for _ in range(4)}
            return picks == {"a", "b"}

        await until(both_resolved, 10, ignoring=(NotFound,))
        await registry.__aexit__(None, None, None)  # the registry process goes away...
        await registry.bus.drain()
        await registry.bus.nc.close()
        async with run_registry(nats_server.url, settings) as fresh:  # ...and a new one starts
            failures = 0
            deadline = time.monotonic() + 2.0  # past the new registry's settling
            while time.monotonic() < deadline:
                try:
                    await resolve(bus, strategy="round_robin")
                except BatonError:
                    failures += 1
                await asyncio.sleep(0.01)  # pacing the resolves over the window
            assert failures == 0
            assert reg_a[0] == 1  # each registered again once, on its 404
            assert reg_b[0] == 1
            assert sorted(fresh.table.services["api"]) == ["a", "b"]
    assert "deregistered" not in events.kinds("a") + events.kinds("b")
    assert "expired" not in events.kinds("a") + events.kinds("b")


@pytest.mark.usefixtures("balancer")
async def test_nats_server_restart_is_ridden_out(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    async def resolved() -> bool:
        return (await resolve(bus)).instance_id == "a"

    async with heartbeating(bus, "a", ttl_s=2):
        await events.wait_for("registered", "a")
        # the balancer hears the event on its own subscription, maybe after this test did
        await until(resolved, 10, ignoring=(NotFound,), what="the balancer to resolve a")
        nats_server.kill()
        await asyncio.sleep(0.5)  # the outage under test: half a second without a server
        nats_server.start()  # same port
        # a generous guard only: reconnects, JetStream's recovery and the registry's
        # leader lease all run on a loaded host here
        await until(resolved, 30, interval=0.05, ignoring=(BatonError,))
