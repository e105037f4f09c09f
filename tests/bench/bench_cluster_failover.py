"""Failover on a 3-node NATS cluster: failed calls, and the longest gap in registrations,
while (a) the leading registry replica and (b) a NATS node is killed (SIGKILL) under load.

Two registry replicas and two balancers run as their own processes, each given the
cluster's URL list. A fleet of SDK instances heartbeats; callers resolve without pause
through the SDK's BalancerClient (which sends a resolve that timed out, or found no
balancer, again, as a caller would see it); a prober registers one instance again and
again and records when each registration is answered. Per window:

    failed calls      resolves that raised, of all resolves in the window
    registration gap  the longest time between two answered registrations

The baseline is the same window with nothing killed, in the same run. (a) kills the
replica that holds the leader lease; (b) kills the node that leads the lease bucket's
stream (KV_BATON_REGISTRY), the worst node to lose: the lease cannot be renewed until
JetStream elects a new stream leader. Each victim is started again after the window.

    python tests/bench/bench_cluster_failover.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from harness import ROOT, Row, emit
from natscluster import NatsCluster
from natsserver import kill_process, stop_process
from waiting import until

from schemas import subjects
from schemas.registry import Ack, Registration, ReplicaStatus
from services.errors import BatonError
from services.sdk import BalancerClient, ServiceAgent

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client

SERVICE = "api"
ENV = {
    "LOG_LEVEL": "INFO",
    "PYTHONPATH": str(ROOT),
    "REGISTRY_SETTLE_S": "0",
    "REGISTRY_LEADER_LEASE_S": "2",
    "NATS_RECONNECT_WAIT_S": "0.1",
}


class Window(msgspec.Struct, kw_only=True):
    name: str
    calls: int
    failed: int
    retried: int
    registrations: int
    longest_gap_s: float


class Proc:
    def __init__(self, name: str, url: str, work: Path) -> None:
        self.name = name
        self.url = url
        self.log = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **ENV, "NATS_URL": self.url}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603  # our own worker
                [sys.executable, "-m", f"services.{self.name.split('-')[0]}"],
                env=env,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )

    def replica(self) -> str:
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if found.get("event") == "registry.ready" and found.get("replica"):
                    return str(found["replica"])
        return ""

    def kill(self) -> None:
        kill_process(self.proc)

    def stop(self) -> None:
        stop_process(self.proc, grace=10)


async def leader(nc: Client) -> str:
    with contextlib.suppress(nats.errors.Error, msgspec.ValidationError):
        reply = await nc.request(subjects.REPLICA_LEADER, b"{}", timeout=0.5)
        return msgspec.json.decode(reply.data, type=ReplicaStatus).replica
    return ""


async def window(  # the load, and what to do in the middle of it
    name: str,
    client: BalancerClient,
    prober: Client,
    seconds: float,
    callers: int,
    fault: Callable[[], Any] | None,
) -> Window:
    stop = asyncio.Event()
    calls = failed = 0
    answered: list[float] = []
    retried_before = sum(client.retried.values())

    async def call() -> None:
        nonlocal calls, failed
        while not stop.is_set():
            calls += 1
            try:
                await client.resolve(SERVICE)
            except BatonError:
                failed += 1

    async def register() -> None:
        body = msgspec.json.encode(
            Registration(instance_id="probe", host="127.0.0.1", port=9999, ttl_s=30)
        )
        while not stop.is_set():
            with contextlib.suppress(nats.errors.Error):
                reply = await prober.request(subjects.register(SERVICE), body, timeout=0.5)
                with contextlib.suppress(msgspec.ValidationError):
                    msgspec.json.decode(reply.data, type=Ack)
                    answered.append(time.monotonic())
            await asyncio.sleep(0.01)

    t0 = time.monotonic()
    tasks = [asyncio.create_task(call()) for _ in range(callers)]
    tasks.append(asyncio.create_task(register()))
    await asyncio.sleep(seconds / 5)
    if fault is not None:
        fault()
    await asyncio.sleep(seconds * 4 / 5)
    stop.set()
    await asyncio.gather(*tasks)
    t1 = time.monotonic()
    marks = [t0, *answered, t1]
    gap = max(b - a for a, b in itertools.pairwise(marks))
    return Window(
        name=name,
        calls=calls,
        failed=failed,
        retried=sum(client.retried.values()) - retried_before,
        registrations=len(answered),
        longest_gap_s=gap,
    )


async def main(args: argparse.Namespace) -> None:  # one scenario, start to end
    seconds = 6.0 if args.quick else 12.0
    instances = 5 if args.quick else 20
    work = Path(tempfile.mkdtemp(prefix="baton-bench-ha-"))
    cluster = NatsCluster(work / "cluster", 3).start()
    procs = [
        Proc("registry-1", cluster.url, work),
        Proc("registry-2", cluster.url, work),
        Proc("balancer-1", cluster.url, work),
        Proc("balancer-2", cluster.url, work),
    ]
    conns: list[Client] = []
    try:
        for p in procs:
            p.start()

        async def connect() -> Client:
            nc = await nats.connect(
                cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.1, ping_interval=2
            )
            conns.append(nc)
            return nc

        watcher = await connect()
        await until(lambda: _truthy(leader(watcher)), timeout=30)
        agents = []
        for i in range(instances):
            nc = await connect()
            agent = ServiceAgent(
                nc, SERVICE, instance_id=f"i-{i}", host="127.0.0.1", port=8000 + i, ttl_s=10
            )
            await agent.__aenter__()
            agents.append(agent)
        client = BalancerClient(await connect(), timeout=0.5)
        prober = await connect()
        await until(lambda: _resolves(client), timeout=30)

        windows = [await window("steady", client, prober, seconds, args.callers, None)]
        print(f"  {windows[-1]}")

        # (a) the replica that holds the leader lease
        lead = await leader(watcher)
        victim = next(p for p in procs if p.name.startswith("registry") and p.replica() == lead)
        windows.append(
            await window("registry replica", client, prober, seconds, args.callers, victim.kill)
        )
        print(f"  {windows[-1]}")
        victim.start()
        await until(lambda: bool(victim.replica()), timeout=30)

        # (b) the node leading the lease bucket's stream
        js = watcher.jetstream()
        info = await js.stream_info("KV_BATON_REGISTRY")
        node = cluster.node_named(info.cluster.leader if info.cluster else "n1")  # type: ignore[arg-type]
        windows.append(await window("NATS node", client, prober, seconds, args.callers, node.kill))
        print(f"  {windows[-1]}")
        node.start()
        await cluster.ready(60)
        for agent in agents:
            await agent.__aexit__(None, None, None)
    finally:
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()
        for p in procs:
            p.stop()
        cluster.stop()

    steady = windows[0]
    rows = []
    for w in windows[1:]:
        rows.append(
            Row(
                area="cluster failover",
                measure=f"calls that succeeded, {w.name} killed ({w.failed} of {w.calls} failed)",
                baseline="nothing killed",
                value=100 * (1 - w.failed / max(1, w.calls)),
                base=100 * (1 - steady.failed / max(1, steady.calls)),
                unit="%",
                ratio=(1 - w.failed / max(1, w.calls))
                / max(1e-9, 1 - steady.failed / max(1, steady.calls)),
            )
        )
        rows.append(
            Row(
                area="cluster failover",
                measure=f"longest gap in registrations, {w.name} killed",
                baseline="nothing killed",
                value=w.longest_gap_s * 1000,
                base=steady.longest_gap_s * 1000,
                unit="ms",
                ratio=w.longest_gap_s / max(1e-9, steady.longest_gap_s),
            )
        )
    emit("cluster_failover", rows, {"windows": [msgspec.to_builtins(w) for w in windows]})


async def _truthy(value: Any) -> bool:
    return bool(await value)


async def _resolves(client: BalancerClient) -> bool:
    try:
        await client.resolve(SERVICE)
    except BatonError:
        return False
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, a small fleet")
    parser.add_argument("--callers", type=int, default=4, help="concurrent resolve loops")
    asyncio.run(main(parser.parse_args()))
