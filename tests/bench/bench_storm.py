"""The registration storm: every registry replica restarts at once (SIGKILL), and the
whole fleet registers again within one heartbeat interval, as SDKs do when their next
heartbeat is answered 404. Counted: registrations answered, answered 5xx, never answered.

On a 3-node cluster, `--replicas` registry processes (1, then 3) (`python -m services.registry`,
each naming the nodes in its own order) are killed and started again; once one answers,
`--instances` registrations are sent with `--window` in flight, each retried on a
timeout as the SDK does. The baseline is a bare nats-py responder
(tests/bench/register_responder.py) answering the same requests on the same cluster in
the same run: decode, answer an Ack. Reported: time to absorb the storm, registrations/s
against the baseline's (target >= 0.6x), and what was lost (target: none).

Both are run `--rounds` times, alternating, and the best round of each is compared.

    python tests/bench/bench_storm.py [--quick] [--instances 10000] [--replicas 1,3]
                                      [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
import nats.errors
from harness import ROOT, Row, emit, running, worker_env
from natscluster import NatsCluster

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER
from schemas.registry import InstanceList, Registration, ServiceList

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from nats.aio.client import Client

SERVICES = 20  # the fleet spreads over this many services


class Storm(msgspec.Struct, kw_only=True):
    seconds: float
    answered: int
    failed_5xx: int
    retried: int  # timeouts, each sent again
    lost: int  # never answered after every retry


async def storm(nc: Client, instances: int, window: int, prefix: str) -> Storm:
    regs = [
        msgspec.json.encode(
            Registration(instance_id=f"{prefix}s{i:05}", host="10.0.0.1", port=8000, ttl_s=30)
        )
        for i in range(instances)
    ]
    counts: collections.Counter[str] = collections.Counter()
    slots = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        subject = subjects.register(f"svc{i % SERVICES}")
        async with slots:
            for _ in range(10):
                try:
                    reply = await nc.request(subject, regs[i], timeout=5)
                except nats.errors.TimeoutError:
                    counts["retried"] += 1
                    continue
                except nats.errors.NoRespondersError:
                    counts["retried"] += 1
                    await asyncio.sleep(0.1)
                    continue
                code = int((reply.headers or {}).get(ERROR_CODE_HEADER, "200"))
                counts["5xx" if code >= 500 else "answered"] += 1
                return
            counts["lost"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(instances)))
    return Storm(
        seconds=time.perf_counter() - t0,
        answered=counts["answered"],
        failed_5xx=counts["5xx"],
        retried=counts["retried"],
        lost=counts["lost"],
    )


@contextlib.contextmanager
def spawned(
    cluster: NatsCluster, work: Path, name: str, args: list[str], n: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    def command(k: int) -> tuple[Path, list[str], dict[str, str]]:
        urls = cluster.urls[k % 3 :] + cluster.urls[: k % 3]  # each process its own first node
        return work / f"{name}-{k}.log", args, worker_env(",".join(urls))

    with running(command(k) for k in range(n)) as procs:
        yield procs


async def until_answered(nc: Client, subject: str, body: bytes) -> float:
    t0 = time.perf_counter()
    deadline = t0 + 30
    while True:
        with contextlib.suppress(nats.errors.Error):
            await nc.request(subject, body, timeout=0.5)
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            msg = f"nothing answers {subject}"
            raise RuntimeError(msg)
        await asyncio.sleep(0.05)


async def held(nc: Client) -> int:
    """Instances the registry lists, asking again as the balancer does if a page is late."""
    for _ in range(5):
        try:
            return await _count(nc)
        except nats.errors.Error:
            await asyncio.sleep(0.5)
    return await _count(nc)


async def _count(nc: Client) -> int:
    listed = msgspec.json.decode(
        (await nc.request(subjects.SERVICES, b"{}", timeout=5)).data, type=ServiceList
    )
    total = 0
    for service in listed.services:
        reply = await nc.request(subjects.instances(service), b"{}", timeout=5)
        total += len(msgspec.json.decode(reply.data, type=InstanceList).instances)
    return total


class Measured(msgspec.Struct, kw_only=True):
    replicas: int
    base: Storm  # the best round of the bare responder
    result: Storm  # the best round of the registry (lost and 5xx: summed over rounds)
    first_answer_s: float
    held: int


async def measure(
    nc: Client, cluster: NatsCluster, work: Path, args: argparse.Namespace, replicas: int
) -> Measured:
    probe = msgspec.json.encode(Registration(instance_id="probe", host="h", port=1))
    register = subjects.register("probe")
    bases: list[Storm] = []
    results: list[Storm] = []
    answer_s, kept = 0.0, 0
    for r in range(args.rounds):  # alternating: the machine is shared and noisy
        tag = f"{replicas}-{r}"
        bare = [str(ROOT / "tests/bench/register_responder.py")]
        with spawned(cluster, work, f"bare{tag}", bare, 1):
            await until_answered(nc, register, probe)
            bases.append(await storm(nc, args.instances, args.window, f"b{tag}"))
        reg_args = ["-m", "services.registry"]
        with spawned(cluster, work, f"registry{tag}", reg_args, replicas) as first:
            await until_answered(nc, subjects.SERVICES, b"{}")
            await storm(nc, 500, args.window, f"f{tag}")  # a fleet that then loses...
            for p in first:  # ... every registry at once
                p.send_signal(signal.SIGKILL)
                p.wait()
        with spawned(cluster, work, f"restarted{tag}", reg_args, replicas):
            answer_s = await until_answered(nc, register, probe)
            results.append(await storm(nc, args.instances, args.window, f"r{tag}"))
            kept = await held(nc)
    result = min(results, key=lambda x: x.seconds)
    result = msgspec.structs.replace(
        result,
        lost=sum(x.lost for x in results),
        failed_5xx=sum(x.failed_5xx for x in results),
    )
    return Measured(
        replicas=replicas,
        base=min(bases, key=lambda x: x.seconds),
        result=result,
        first_answer_s=answer_s,
        held=kept,
    )


def rows(m: Measured, instances: int) -> list[Row]:
    rate, base_rate = instances / m.result.seconds, instances / m.base.seconds
    bad = m.result.lost + m.result.failed_5xx
    print(
        f"storm of {instances} after a full restart of {m.replicas} replica(s): first answer "
        f"{m.first_answer_s:.2f} s after the restart, absorbed in {m.result.seconds:.2f} s "
        f"(bare responder {m.base.seconds:.2f} s); answered {m.result.answered}, 5xx "
        f"{m.result.failed_5xx}, retried {m.result.retried}, lost {m.result.lost}; "
        f"held {m.held}"
    )
    what = f"{m.replicas} replica{'s' if m.replicas > 1 else ''}"
    return [
        Row(
            area="storm",
            measure=f"registrations/s, {instances} at once, {what} after SIGKILL of all",
            baseline="bare nats-py responder",
            value=rate,
            base=base_rate,
            unit="req/s",
            ratio=rate / base_rate,
            target=">= 0.6x",
            met=rate / base_rate >= 0.6,
        ),
        Row(
            area="storm",
            measure=f"seconds to absorb the storm, {what}",
            baseline="bare nats-py responder",
            value=m.result.seconds,
            base=m.base.seconds,
            unit="s",
            ratio=m.result.seconds / m.base.seconds,
        ),
        Row(
            area="storm",
            measure=f"registrations lost or answered 5xx, {what}",
            baseline="registrations sent",
            value=bad,
            base=instances,
            unit="",
            ratio=bad / instances,
            target="0",
            met=bad == 0 and m.held >= instances,
        ),
    ]


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="baton-storm-"))
    cluster = NatsCluster(work / "cluster", size=3).start()
    try:
        nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1)
        measured = [await measure(nc, cluster, work, args, n) for n in args.replicas]
        await nc.close()
    finally:
        cluster.stop()
    emit(
        "storm",
        [row for m in measured for row in rows(m, args.instances)],
        {f"replicas_{m.replicas}": msgspec.to_builtins(m) for m in measured},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 instances")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument(
        "--replicas",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 3],
        help="registry replicas, one storm per count",
    )
    parser.add_argument("--window", type=int, default=1_000, help="registrations in flight")
    parser.add_argument("--rounds", type=int, default=2, help="best of each, alternating")
    ns = parser.parse_args()
    if ns.quick:
        ns.instances, ns.rounds = min(ns.instances, 3_000), 1
    asyncio.run(main(ns))
