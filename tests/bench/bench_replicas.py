"""Registry replicas: the two designs the issue names, measured on one 3-node cluster.

(A) every replica follows the same registrations and heartbeats on plain subscriptions
    and keeps its lease table in memory; one, elected on a JetStream KV lease, speaks.
    Run with 1 and with 3 replicas (`python -m services.registry`).
(B) leases stored in a replicated KV (R3 stream, `allow_msg_ttl`, subject delete
    markers): a heartbeat is a JetStream publish with `Nats-TTL`, acknowledged once a
    quorum stored it; the server's TTL does the expiry, and writes a marker.

Same client, same concurrency, same instances, in one run. The baseline is a bare
nats-py responder (tests/bench/heartbeat_responder.py). Reported per design: heartbeats/s,
CPU per heartbeat (every registry process plus every nats-server, from /proc), bytes held
per instance (registry RSS growth, or the stream's bytes per key), and for (B) how late
the server's expiry comes after the TTL.

    python tests/bench/bench_replicas.py [--quick] [--instances 5000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
import nats.errors
from bench_storm import spawned, until_answered
from harness import ROOT, Row, emit, pct
from nats.js import api
from natscluster import NatsCluster

from schemas import subjects
from schemas.registry import Heartbeat, Registration

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg

TTL = 3.0
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Result(msgspec.Struct, kw_only=True):
    rate: float  # heartbeats/s
    cpu_us: float  # CPU microseconds per heartbeat, every process involved
    held_b: float = 0.0  # bytes per instance held


async def drive(
    send: Callable[[int], Awaitable[object]],
    n: int,
    seconds: float,
    concurrency: int,
    pids: list[int],
) -> tuple[float, float]:
    done = 0
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            await send(i % n)
            done += 1
            i += concurrency

    cpu0, t0 = cpu_s(pids), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, cpu_s(pids) - cpu0
    return done / elapsed, cpu / max(done, 1) * 1e6


def ids(n: int) -> list[str]:
    return [f"i{i:05}" for i in range(n)]


async def design_a(
    nc: Client, cluster: NatsCluster, work: Path, args: argparse.Namespace, replicas: int
) -> Result:
    servers = [node.proc.pid for node in cluster.nodes if node.proc]
    names = ids(args.instances)
    with spawned(cluster, work, f"a{replicas}", ["-m", "services.registry"], replicas) as procs:
        await until_answered(nc, subjects.SERVICES, b"{}")
        await until_leader(nc)
        before = [rss(p.pid) for p in procs]
        for iid in names:
            reg = Registration(instance_id=iid, host="10.0.0.1", port=8000, ttl_s=3600)
            await nc.request(subjects.register("svc"), msgspec.json.encode(reg), timeout=5)
        await settle(procs)
        held = sum(rss(p.pid) - b for p, b in zip(procs, before, strict=True)) / replicas
        bodies = [msgspec.json.encode(Heartbeat(instance_id=iid)) for iid in names]
        subject = subjects.heartbeat("svc")

        async def send(i: int) -> object:
            return await nc.request(subject, bodies[i], timeout=5)

        rate, cpu = await drive(
            send, len(names), args.seconds, args.concurrency, servers + [p.pid for p in procs]
        )
    return Result(rate=rate, cpu_us=cpu, held_b=held / len(names))


async def until_leader(nc: Client) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error):
            await nc.request(subjects.REPLICA_LEADER, b"{}", timeout=0.5)
            return
        await asyncio.sleep(0.1)


async def settle(procs: list[subprocess.Popen[bytes]]) -> None:
    """Let followers finish what they received (their CPU stops moving)."""
    last = -1.0
    while (now := cpu_s([p.pid for p in procs])) != last:  # /proc, no event
        last = now
        await asyncio.sleep(0.3)


async def design_b(
    nc: Client, cluster: NatsCluster, args: argparse.Namespace
) -> tuple[Result, list[float], int]:
    servers = [node.proc.pid for node in cluster.nodes if node.proc]
    js = nc.jetstream(timeout=5)
    await js.add_stream(
        api.StreamConfig(
            name="KV_LEASES",
            subjects=["$KV.LEASES.>"],
            num_replicas=3,
            max_msgs_per_subject=1,
            allow_msg_ttl=True,
            subject_delete_marker_ttl=60.0,
            allow_rollup_hdrs=True,
            deny_delete=True,
            storage=api.StorageType.FILE,
        )
    )
    names = ids(args.instances)
    body = msgspec.json.encode(
        Registration(instance_id="x", host="10.0.0.1", port=8000, ttl_s=TTL)
    )  # a lease's value: the registration, as a KV design would store it

    async def send(i: int) -> object:
        return await js.publish(f"$KV.LEASES.svc.{names[i]}", body, msg_ttl=3600)

    rate, cpu = await drive(send, len(names), args.seconds, args.concurrency, servers)
    info = await js.stream_info("KV_LEASES")
    held = info.state.bytes / max(info.state.messages, 1)

    # expiry: every instance heartbeats once with a TTL, then falls silent
    markers: dict[str, float] = {}
    all_in = asyncio.Event()

    async def on_marker(msg: Msg) -> None:
        if (msg.headers or {}).get("Nats-Marker-Reason"):
            markers[msg.subject] = time.monotonic()
            if len(markers) >= args.expiring:
                all_in.set()

    sub = await js.subscribe(
        "$KV.LEASES.svc.>",
        cb=on_marker,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.NEW,
    )
    sent: dict[str, float] = {}
    for iid in names[: args.expiring]:
        await js.publish(f"$KV.LEASES.svc.{iid}", body, msg_ttl=TTL)
        sent[f"$KV.LEASES.svc.{iid}"] = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), TTL + 30)
    await sub.unsubscribe()
    lags = [markers[s] - (t + TTL) for s, t in sent.items() if s in markers]
    return Result(rate=rate, cpu_us=cpu, held_b=held), lags, len(sent) - len(lags)


async def bare(nc: Client, cluster: NatsCluster, work: Path, args: argparse.Namespace) -> Result:
    servers = [node.proc.pid for node in cluster.nodes if node.proc]
    script = [str(ROOT / "tests/bench/heartbeat_responder.py")]
    body = msgspec.json.encode(Heartbeat(instance_id="i0"))
    with spawned(cluster, work, "bare", script, 1) as procs:
        await until_answered(nc, subjects.heartbeat("svc"), body)
        subject = subjects.heartbeat("svc")

        async def send(_: int) -> object:
            return await nc.request(subject, body, timeout=5)

        rate, cpu = await drive(
            send, 1, args.seconds, args.concurrency, servers + [p.pid for p in procs]
        )
    return Result(rate=rate, cpu_us=cpu)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="baton-replicas-"))
    cluster = NatsCluster(work / "cluster", size=3).start()
    try:
        nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1)
        first = await bare(nc, cluster, work, args)
        a1 = await design_a(nc, cluster, work, args, 1)
        a3 = await design_a(nc, cluster, work, args, 3)
        b, lags, missing = await design_b(nc, cluster, args)
        last = await bare(nc, cluster, work, args)  # before and after: the better of two
        base = first if first.rate >= last.rate else last
        await nc.close()
    finally:
        cluster.stop()
    print(f"bare responder: {base.rate:,.0f} hb/s, {base.cpu_us:.0f} us CPU/hb")
    for name, r in (("A, 1 replica", a1), ("A, 3 replicas", a3), ("B, KV R3 + TTL", b)):
        print(f"{name}: {r.rate:,.0f} hb/s, {r.cpu_us:.0f} us CPU/hb, {r.held_b:.0f} B/instance")
    if lags:
        print(
            f"B expiry after TTL: p50 {pct(lags, 0.5):.0f} ms, p99 {pct(lags, 0.99):.0f} ms, "
            f"max {max(lags) * 1000:.0f} ms; markers missing {missing}"
        )
    rows = [
        Row(
            area="replicas",
            measure=f"heartbeats/s, {name}, {args.concurrency} in flight",
            baseline="bare nats-py responder",
            value=r.rate,
            base=base.rate,
            unit="hb/s",
            ratio=r.rate / base.rate,
        )
        for name, r in (("A 1 replica", a1), ("A 3 replicas", a3), ("B KV R3 TTL", b))
    ]
    rows += [
        Row(
            area="replicas",
            measure=f"CPU per heartbeat, {name} (all processes)",
            baseline="bare nats-py responder",
            value=r.cpu_us,
            base=base.cpu_us,
            unit="us",
            ratio=r.cpu_us / base.cpu_us,
        )
        for name, r in (("A 1 replica", a1), ("A 3 replicas", a3), ("B KV R3 TTL", b))
    ]
    rows.append(
        Row(
            area="replicas",
            measure="bytes held per instance, B (stream) vs A (RSS/replica)",
            baseline="A, per replica",
            value=b.held_b,
            base=a3.held_b,
            unit="B",
            ratio=b.held_b / max(a3.held_b, 1.0),
        )
    )
    emit(
        "replicas",
        rows,
        {
            "bare": msgspec.to_builtins(base),
            "a1": msgspec.to_builtins(a1),
            "a3": msgspec.to_builtins(a3),
            "b": msgspec.to_builtins(b),
            "b_expiry_lag_s": lags,
            "b_markers_missing": missing,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 instances, 2 s each")
    parser.add_argument("--instances", type=int, default=5_000)
    parser.add_argument("--expiring", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    ns = parser.parse_args()
    if ns.quick:
        ns.instances, ns.seconds, ns.expiring = min(ns.instances, 2_000), 2.0, 500
    asyncio.run(main(ns))
