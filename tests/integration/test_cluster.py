"""Baton on a real 3-node NATS cluster: node loss (SIGKILL) under load, the config log on
three replicas, queue groups across node loss, and NATS_URL lists.

Workers run in-process (tests/workers.py), each on its own connection, given the
cluster's comma-separated URL list unless a test pins one to a node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from conftest import Events
from waiting import until
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, ConfigHistory, ServiceConfig
from schemas.registry import Empty, InstanceList, InstancesQuery
from services import logs
from services.bus import Bus, connect
from services.config import BusSettings
from services.errors import BatonError
from services.governor import GovernorSettings
from services.sdk import BalancerClient, ServiceAgent
from services.sdk import connect as sdk_connect

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natscluster import ClusterNode, NatsCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: PTH100, PTH120


def node_of(nc: Client, cluster: NatsCluster) -> ClusterNode:
    """The node a connection is on now."""
    url = nc.connected_url
    assert url is not None
    for node in cluster.nodes:
        if node.port == url.port:
            return node
    raise AssertionError(f"{url} is no node of the cluster")


@contextlib.asynccontextmanager
async def client_bus(url: str, name: str = "test") -> AsyncIterator[Bus]:
    log = logs.get_logger(name)
    async with connect(BusSettings(url=url, reconnect_wait_s=0.05), log, name=name) as bus:
        yield bus


async def change(bus: Bus, service: str, reason: str, timeout: float = 2.0) -> ConfigApplied:
    return await bus.request(
        subjects.change(service),
        ConfigChange(actor="ann", reason=reason, warmup_s=float(len(reason) % 7)),
        ConfigApplied,
        timeout=timeout,
    )


async def history(bus: Bus, service: str) -> list[ConfigApplied]:
    reply = await bus.request(subjects.history(service), Empty(), ConfigHistory, timeout=5)
    return reply.entries


# -- NATS_URL --------------------------------------------------------------------------
def test_a_worker_given_a_malformed_nats_url_stops_at_start_naming_it() -> None:
    env = {**os.environ, "NATS_URL": "nats://127.0.0.1:4222,nats://127.0.0.1:42x2"}
    env["LOG_LEVEL"] = "INFO"
    done = subprocess.run(  # our own worker
        [sys.executable, "-m", "services.registry"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, out
    assert "'nats://127.0.0.1:42x2' has the port '42x2', not a number 1-65535" in out
    assert "connect_failed" not in out  # it never tried


async def test_every_client_fails_over_when_its_node_dies(nats_cluster: NatsCluster) -> None:
    """A worker, an SDK client and the CLI, given the list, reach a live node by themselves."""
    async with run_registry(nats_cluster.url) as registry:
        first = node_of(registry.bus.nc, nats_cluster)
        first.kill()
        nc_of = registry.bus.nc
        await until(
            lambda: nc_of.is_connected and node_of(nc_of, nats_cluster) is not first, timeout=10
        )
        nc = await sdk_connect(",".join([first.url, *nats_cluster.urls]))
        try:
            assert node_of(nc, nats_cluster) is not first
        finally:
            await nc.close()
        # the CLI, with the dead node first in its list, connects to a live one and gets the
        # registry's answer (a lone replica is silent until it can renew its lease, which
        # waits for JetStream to elect a new leader for the lease bucket: so ask again)
        outcomes: list[tuple[int | None, str]] = []

        async def cli_answers() -> bool:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                "--timeout",
                "3",
                "services",
                env={**os.environ, "NATS_URL": ",".join([first.url, *nats_cluster.urls])},
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            _, err = await proc.communicate()
            outcomes.append((proc.returncode, err.decode()))
            return proc.returncode == 0

        await until(cli_answers, timeout=40)
        assert not [e for _, e in outcomes if "cannot connect" in e], outcomes


# -- the config log on three replicas ---------------------------------------------------
async def test_the_config_log_survives_the_loss_of_its_leader_node(
    nats_cluster: NatsCluster,
) -> None:
    settings = GovernorSettings(replicas=3, retry_s=0.1, store_timeout_s=2)
    async with (
        run_governor(nats_cluster.url, settings),
        client_bus(nats_cluster.url) as bus,
    ):
        js = bus.nc.jetstream()
        for i in range(3):
            await change(bus, "api", f"before-{i}")
        info = await js.stream_info(subjects.CONFIG_STREAM)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert info.cluster.leader
        assert len(info.cluster.replicas or []) == 2
        leader = nats_cluster.node_named(info.cluster.leader)

        acked: list[ConfigApplied] = []
        failed: collections.Counter[str] = collections.Counter()
        stop = asyncio.Event()
        killed_at: list[float] = []
        accepted_again: list[float] = []

        async def writer() -> None:  # changes keep coming while the leader's node dies
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    acked.append(await change(bus, "api", f"during-{n}", timeout=3))
                except BatonError as exc:
                    failed[type(exc).__name__] += 1
                    await asyncio.sleep(0.02)
                else:
                    if killed_at and not accepted_again:
                        accepted_again.append(time.monotonic())

        task = asyncio.create_task(writer())
        await until(lambda: len(acked) >= 5, timeout=10)
        leader.kill()
        killed_at.append(time.monotonic())
        acked_at_kill = len(acked)
        await until(lambda: len(acked) >= acked_at_kill + 5, timeout=20)
        stop.set()
        await task

        after = await js.stream_info(subjects.CONFIG_STREAM)
        assert after.cluster is not None
        assert after.cluster.leader != leader.name
        # The history is read through a consumer, which only the JetStream meta leader
        # creates: when the killed node led the meta group too, that group elects its own
        # leader, maybe seconds after the stream's (docs/cluster-guarantees.md). Writes
        # are accepted again before that; the history reads once it has one.
        await nats_cluster.ready()
        stored = {e.revision: e for e in await history(bus, "api")}
        for entry in acked:  # no acknowledged change lost, each stored as acknowledged
            assert stored[entry.revision] == entry
        # Recovery took accepted_again - killed_at seconds (reported by the failover bench).
        assert accepted_again

        # the node comes back and catches up: three current replicas again
        leader.start()
        await nats_cluster.ready()

        async def three_current() -> bool:
            info = await js.stream_info(subjects.CONFIG_STREAM)
            peers = (info.cluster.replicas or []) if info.cluster else []
            return len(peers) == 2 and all(p.current for p in peers)

        await until(three_current, timeout=20)


def served(worker: Any) -> int:
    """Messages the worker's subscriptions took (each request reaches one queue member)."""
    return sum(sub.delivered for sub in worker.bus._subs)  # counting only


async def test_a_reader_starting_first_creates_the_config_log_on_three_nodes(
    nats_cluster: NatsCluster,
) -> None:
    """No setting beyond the URLs: the config log gets 3 copies on a 3-node cluster even
    when a registry creates it before any governor runs (and so is never scaled up)."""
    async with run_registry(nats_cluster.urls[0]), client_bus(nats_cluster.url) as bus:
        js = bus.nc.jetstream()

        async def created() -> bool:
            with contextlib.suppress(Exception):
                return (await js.stream_info(subjects.CONFIG_STREAM)).config.num_replicas == 3
            return False

        await until(created, timeout=10)
        async with run_governor(nats_cluster.url, GovernorSettings(retry_s=0.1)):
            await change(bus, "api", "first")
        assert (await js.stream_info(subjects.CONFIG_STREAM)).config.num_replicas == 3


async def test_governor_replicas_share_work_across_node_loss(nats_cluster: NatsCluster) -> None:
    """Two governors, each first on its own node; one node dies under requests: every
    request is answered once, by the survivor until the other has moved to a live node
    (nats-py learns the cluster's other nodes from the server), then by both again."""
    a, b, c = nats_cluster.nodes
    settings = GovernorSettings(replicas=3, retry_s=0.1, store_timeout_s=2)
    async with (
        run_governor(a.url, settings) as gov_a,
        run_governor(b.url, settings) as gov_b,
        client_bus(c.url) as bus,
    ):
        js = bus.nc.jetstream()

        async def ask(n: int, tag: str) -> None:
            before = served(gov_a) + served(gov_b)
            replies = await asyncio.gather(
                *(change(bus, "api", f"{tag}-{i}", timeout=5) for i in range(n)),
                *(
                    bus.request(subjects.config("api"), Empty(), ServiceConfig, timeout=5)
                    for _ in range(n)
                ),
            )
            assert len(replies) == 2 * n  # every one answered: a failure would have raised
            assert served(gov_a) + served(gov_b) - before == 2 * n  # once each

        await ask(20, "before")
        assert served(gov_a) > 0
        assert served(gov_b) > 0  # both replicas took a share

        moved = asyncio.Event()

        async def on_moved() -> None:
            moved.set()

        # as the balancers' test: reconnect hooks run once the new node has answered the
        # PING sent after the replayed subscriptions (`is_connected` turns true before)
        gov_a.bus.reconnect_hooks.append(on_moved)
        a.kill()

        async def log_has_a_live_leader() -> bool:  # its own failover is tested above
            with contextlib.suppress(Exception):
                info = await asyncio.wait_for(js.stream_info(subjects.CONFIG_STREAM), 0.5)
                return info.cluster is not None and info.cluster.leader not in (None, a.name)
            return False

        await until(log_has_a_live_leader, timeout=30)
        await ask(20, "after")
        await asyncio.wait_for(moved.wait(), 10)
        assert node_of(gov_a.bus.nc, nats_cluster) is not a
        a_before = served(gov_a)
        await ask(20, "moved")
        assert served(gov_a) > a_before  # the moved replica shares the work again


async def test_balancer_replicas_share_resolves_across_node_loss(
    nats_cluster: NatsCluster,
) -> None:
    """Resolves sent while a balancer's node dies are all answered (the SDK sends one
    that timed out or found no responder again, to the queue group), and the moved
    replica picks again.

    A resolve racing the death may need that second attempt even though the other
    replica runs: nats-server gives a queue request to one member, and answers 503 when
    the delivery to the chosen one (behind the closing route) fails, without trying
    another (docs/cluster-guarantees.md). Once the dead node's routes are gone, none does.
    """
    a, b, c = nats_cluster.nodes
    async with (
        run_registry(c.url),
        run_balancer(a.url) as bal_a,
        run_balancer(b.url) as bal_b,
        AsyncExitStack() as stack,
    ):
        nc = await sdk_connect(c.url)
        stack.push_async_callback(nc.close)
        agent = ServiceAgent(nc, "api", instance_id="api-1", host="127.0.0.1", port=8001)
        await stack.enter_async_context(agent)
        client = BalancerClient(nc, timeout=0.5)

        async def shares(n: int) -> collections.Counter[str]:
            eps = await asyncio.gather(*(client.resolve("api") for _ in range(n)))
            return collections.Counter(ep.pick.split(".", 1)[0] for ep in eps)

        await until(lambda: _resolves(client), timeout=10)
        before = await shares(60)
        assert before[bal_a.node] > 0
        assert before[bal_b.node] > 0

        moved = asyncio.Event()

        async def on_moved() -> None:
            moved.set()

        # Reconnect hooks run once the new node has answered the PING sent after the
        # replayed subscriptions, so it serves them (`is_connected` turns true before).
        bal_a.bus.reconnect_hooks.append(on_moved)
        a.kill()
        during = await shares(60)  # raced with the node's death: none may fail
        assert sum(during.values()) == 60
        await asyncio.wait_for(moved.wait(), 10)
        await until(bal_a.sync.synced.is_set, timeout=10)
        no_responders = client.retried["no_responders"]  # 0 or more, from the race above
        after = await shares(60)
        assert after[bal_a.node] > 0
        assert after[bal_b.node] > 0
        assert client.retried["no_responders"] == no_responders  # a member always answered


async def _resolves(client: BalancerClient) -> bool:
    try:
        await client.resolve("api")
    except BatonError:
        return False
    return True


# -- node loss under load ---------------------------------------------------------------
async def test_node_loss_under_load_fails_everyone_over_and_expires_nobody(
    nats_cluster: NatsCluster,
) -> None:
    """Kill the node a registry replica is on, while five instances heartbeat and a client
    resolves without pause: every worker and SDK moves to a live node by itself, no
    instance expires or turns unhealthy, and no resolve fails (the SDK retries on
    another balancer)."""
    url = nats_cluster.url
    async with AsyncExitStack() as stack:
        registry, registry_2 = [await stack.enter_async_context(run_registry(url)) for _ in "ab"]
        balancers = [await stack.enter_async_context(run_balancer(url)) for _ in range(2)]
        watcher = await stack.enter_async_context(client_bus(url, "watcher"))
        events = Events()
        await watcher.nc.subscribe(subjects.every(subjects.EVENTS), cb=events.on_msg)
        await watcher.confirm()

        conns: list[Client] = []
        for i in range(5):
            nc = await sdk_connect(url)
            stack.push_async_callback(nc.close)
            conns.append(nc)
            await stack.enter_async_context(
                ServiceAgent(
                    nc,
                    "api",
                    instance_id=f"api-{i}",
                    host="127.0.0.1",
                    port=8000 + i,
                    ttl_s=2.0,
                    heartbeat_s=0.3,
                )
            )
        caller_nc = await sdk_connect(url)
        stack.push_async_callback(caller_nc.close)
        client = BalancerClient(caller_nc, timeout=0.5)
        await until(lambda: _resolves(client), timeout=10)

        outcomes: collections.Counter[str] = collections.Counter()
        stop = asyncio.Event()

        async def caller() -> None:
            while not stop.is_set():
                try:
                    await client.resolve("api")
                except BatonError as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    outcomes["ok"] += 1

        callers = [asyncio.create_task(caller()) for _ in range(4)]
        await until(lambda: outcomes["ok"] >= 200, timeout=10)
        victim = node_of(registry.bus.nc, nats_cluster)
        on_victim = [
            nc
            for nc in [
                registry.bus.nc,
                registry_2.bus.nc,
                *(b.bus.nc for b in balancers),
                *conns,
                caller_nc,
            ]
            if node_of(nc, nats_cluster) is victim
        ]
        victim.kill()
        ok_at_kill = outcomes["ok"]
        # everyone on the dead node is on a live one again, and calls keep succeeding
        await until(
            lambda: all(
                nc.is_connected and node_of(nc, nats_cluster) is not victim for nc in on_victim
            ),
            timeout=10,
        )
        await until(lambda: outcomes["ok"] >= ok_at_kill + 500, timeout=10)
        # two whole TTLs on the survivors: any lease lost to the detour would expire here
        await asyncio.sleep(4.0)  # a wait for what must NOT happen: an expiry on a survivor
        stop.set()
        await asyncio.gather(*callers)

        bad = [e for e in events.seen if e.kind in ("unhealthy", "expired", "deregistered")]
        assert bad == []
        failed = {k: v for k, v in outcomes.items() if k != "ok"}
        assert failed == {}, f"{failed} of {sum(outcomes.values())} resolves failed"
        listed: list[InstanceList] = []

        async def registry_answers() -> bool:  # a registry cut off from its lease is silent
            with contextlib.suppress(BatonError):
                listed.append(
                    await watcher.request(subjects.instances("api"), InstancesQuery(), InstanceList)
                )
            return bool(listed)

        await until(registry_answers, timeout=10)
        assert sorted((i.instance_id, i.healthy) for i in listed[0].instances) == [
            (f"api-{i}", True) for i in range(5)
        ]
