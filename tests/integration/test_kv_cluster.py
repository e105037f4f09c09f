"""The config center on a real 3-node NATS cluster: the store on three replicas, and the
loss (SIGKILL) of the node that holds the kv worker, the store's leader and a watcher's
connection: no acknowledged write is lost, and the watch ends where the store is."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING

import nats
from test_cluster import client_bus, node_of
from waiting import until
from workers import run_kv

from schemas import subjects
from services.errors import BatonError
from services.kv import KvSettings
from services.sdk import KvClient

if TYPE_CHECKING:
    from nats.aio.client import Client
    from natscluster import NatsCluster

    from schemas.kv import KvEntry


async def _leader(nc: Client) -> str:
    info = await nc.jetstream().stream_info(subjects.KV_STREAM)
    assert info.cluster is not None
    return info.cluster.leader or ""


async def _lead_on(nc: Client, node: str) -> None:
    """Step the store's leader down until `node` leads it."""
    stepdown = f"$JS.API.STREAM.LEADER.STEPDOWN.{subjects.KV_STREAM}"

    async def leads() -> bool:
        if await _leader(nc) == node:
            return True
        with contextlib.suppress(nats.errors.Error):
            await nc.request(stepdown, b"", timeout=2)
        return False

    await until(leads, timeout=30, interval=0.5)


async def test_no_acknowledged_write_is_lost_and_watches_resume(
    nats_cluster: NatsCluster,
) -> None:
    settings = KvSettings(retry_s=0.1, store_timeout_s=2)
    async with run_kv(nats_cluster.url, settings) as kv, client_bus(nats_cluster.url) as bus:
        owner = node_of(kv.bus.nc, nats_cluster)
        info = await bus.nc.jetstream().stream_info(subjects.KV_STREAM)
        assert info.config.num_replicas == 3
        await _lead_on(bus.nc, owner.name)  # one SIGKILL takes the worker and the leader
        # a watcher on the same node: it reconnects elsewhere and reads what it missed
        others = [n.url for n in nats_cluster.nodes if n is not owner]
        watcher_nc = await nats.connect(
            [owner.url, *others],
            dont_randomize=True,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
        )
        writer = KvClient(bus.nc, actor="writer", timeout=3)
        watcher = KvClient(watcher_nc)
        seen: dict[str, KvEntry] = {}

        def on_change(entry: KvEntry) -> None:
            seen[entry.key] = entry

        acked: dict[str, KvEntry] = {}
        failed: collections.Counter[str] = collections.Counter()
        stop = asyncio.Event()

        async def write() -> None:  # puts keep coming while the owner's node dies
            n = 0
            while not stop.is_set():
                n += 1
                key = f"app/k{n}"
                try:
                    written = await writer.put(key, f"v{n}")
                except BatonError as exc:
                    failed[type(exc).__name__] += 1
                    await asyncio.sleep(0.02)  # a failed write's retry pace, not a wait
                    continue
                assert written.entry is not None
                acked[key] = written.entry

        try:
            async with watcher.watch("app/", on_change) as watch:
                task = asyncio.create_task(write())
                await until(lambda: len(acked) >= 5, timeout=10)
                owner.kill()
                at_kill = len(acked)
                await until(lambda: len(acked) >= at_kill + 10, timeout=30)
                stop.set()
                await task
                assert await _leader(bus.nc) != owner.name
                # every acknowledged write is stored as acknowledged
                for key, entry in acked.items():
                    now = await writer.get(key)
                    assert now is not None, key
                    assert (now.value, now.modify_index) == (entry.value, entry.modify_index)

                # and the watcher, moved to another node, has seen every one of them
                def caught_up() -> bool:
                    return all(
                        key in seen and seen[key].modify_index == entry.modify_index
                        for key, entry in acked.items()
                    )

                await until(caught_up, timeout=20)
                assert watch.resyncs >= 1  # it did reconnect, and read the prefix again
        finally:
            await watcher_nc.close()
        owner.start()
        await nats_cluster.ready()
