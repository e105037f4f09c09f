"""Call reports into one balancer process: batched (CallReports) against single, same run.

A registry and a balancer run as their own processes on one nats-server; 1,000 instances
(10 services x 100) are registered, so every report lands on a real member (latency,
the end of a pick, outlier counting: the balancer's whole report path). The same call
reports (bench_collector.py's feed: varied latencies, 2 % failures) are then written into
NATS through a raw socket, in alternating rounds: each report alone on
balancer.v1.report.{service}, or as the SDK batches them, CallReports of up to 256 on
balancer.v1.reports.{service}.

"Absorbed": the balancer has processed the feed. It answers nothing on these subjects, so
the figure is the reports divided by the balancer's CPU seconds from the first byte until
it is idle again (no CPU tick for 1 s, not counted): the rate one fully busy core
absorbs, steadier than a wall-clock rate on a shared machine; the wall-clock rate is
printed too. The
balancer's and the server's logs must show no slow consumer or dropped message.

Then the cost of batching to a pick's time in flight: one BalancerClient reports 2,000
calls a second for two seconds with batching (batch_ms=5) and without; a subscriber in
the same process notes when each report arrives on the wire: the delay added to a pick's
closing, p50 and p99 (the network and the balancer's own decode come on top, alike).

    python tests/bench/bench_reports.py [--quick] [--reports 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from bench_collector import blast, child, cpu_s, reports, wire, wire_batched
from harness import Row, emit, pct, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import CallReport, CallReports, Endpoint, ResolveRequest
from schemas.registry import Registration
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client
    from nats.aio.msg import Msg

SERVICES = 10
INSTANCES = 100  # a service; instance i{k} is in service svc{k % 10}, as the feed says
LOSS_MARKS = ("slow consumer", "slowconsumer", "bus.message_dropped", "bus.error")
# idle = no CPU tick for this long; on a loaded machine a busy process can wait a few
# hundred milliseconds for a core, and a shorter quiet spell ended rounds early
IDLE_S = 1.0


async def register_all(nc: Client) -> None:
    encode = msgspec.json.Encoder().encode
    first = Registration(instance_id="i0", host="127.0.0.1", port=8000, ttl_s=3600)
    await wait_for_responder(nc, subjects.register("svc0"), first)
    replies = await asyncio.gather(
        *(
            nc.request(
                subjects.register(f"svc{k % SERVICES}"),
                encode(Registration(instance_id=f"i{k}", host="127.0.0.1", port=8000, ttl_s=3600)),
                timeout=30,
            )
            for k in range(SERVICES * INSTANCES)
        )
    )
    assert all(not r.headers for r in replies), "a registration was refused"


async def idle(pid: int) -> tuple[float, float]:
    """(perf_counter, CPU seconds) once process `pid` has used no CPU for IDLE_S."""
    last, since = cpu_s(pid), time.perf_counter()
    while True:
        await asyncio.sleep(0.025)
        now, cpu = time.perf_counter(), cpu_s(pid)
        if cpu != last:
            last, since = cpu, now
        elif now - since >= IDLE_S:
            return since, cpu


async def absorb(url: str, pid: int, feed: bytes) -> tuple[float, float]:
    """(CPU seconds, wall seconds) the balancer spent on `feed`."""
    await idle(pid)
    c0, t0 = cpu_s(pid), time.perf_counter()
    await blast(url, feed)
    t1, c1 = await idle(pid)
    return c1 - c0, t1 - t0


def losses(work: Path) -> list[str]:
    found = []
    for log in (work / "balancer.log", work / "nats" / "nats.log"):
        if log.exists():
            found += [
                f"{log.name}: {line.strip()}"
                for line in log.read_text(errors="replace").splitlines()
                if any(mark in line.lower() for mark in LOSS_MARKS)
            ]
    return found


async def close_delay(url: str, batch_ms: float, rate: float, seconds: float) -> list[float]:
    """Seconds from each `report()` until that report is on the wire, as a subscriber sees."""
    nc = await nats.connect(url)
    sent: dict[str, float] = {}
    delays: list[float] = []
    one = msgspec.json.Decoder(CallReport).decode
    many = msgspec.json.Decoder(CallReports).decode

    async def on_single(msg: Msg) -> None:
        now = time.perf_counter()
        delays.append(now - sent[one(msg.data).pick])

    async def on_batch(msg: Msg) -> None:
        now = time.perf_counter()
        delays.extend(now - sent[r.pick] for r in many(msg.data).reports)

    await nc.subscribe(subjects.report("delay"), cb=on_single)
    await nc.subscribe(subjects.reports("delay"), cb=on_batch)
    await nc.flush()
    n = int(rate * seconds)
    async with BalancerClient(nc, batch_ms=batch_ms) as client:
        start = time.perf_counter()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            ep = Endpoint(
                instance_id="i1", host="h", port=1, zone="", metadata={}, strategy="weighted",
                pick=f"p{i}",
            )  # fmt: skip
            sent[ep.pick] = time.perf_counter()
            await client.report("delay", ep, 1.0)
    async with asyncio.timeout(10):
        while len(delays) < n:  # noqa: ASYNC110  # the subscriber's own count
            await asyncio.sleep(0.01)
    await nc.close()
    return delays


async def main(args: argparse.Namespace) -> None:
    n = args.reports
    feed = reports(n)
    single, batched = wire(feed), wire_batched(feed)
    runs: dict[str, list[dict[str, float]]] = {"single": [], "batched": []}
    with processes(worker("registry"), worker("balancer")) as server:
        work = server.log_path.parent.parent
        pid = child("services.balancer")
        nc = await nats.connect(server.url)
        await register_all(nc)
        for s in range(SERVICES):  # the balancer knows each service
            await wait_for_responder(nc, subjects.resolve(f"svc{s}"), ResolveRequest())
        await nc.close()
        for r in range(args.rounds):
            for name, feed_bytes in (("single", single), ("batched", batched)):
                cpu, wall = await absorb(server.url, pid, feed_bytes)
                runs[name].append({"cpu_s": cpu, "wall_s": wall, "per_cpu_s": n / cpu})
                print(
                    f"round {r + 1} {name:<8} {n / cpu:>10,.0f} reports a CPU second "
                    f"({n / wall:>9,.0f}/s by the clock, {len(feed_bytes) / n:.0f} B a report)"
                )
        lost = losses(work)
    for line in lost:
        print("LOSS", line)
    delay = {
        "single": await close_delay_run(args, 0.0),
        "batched": await close_delay_run(args, 5.0),
    }
    for name, d in delay.items():
        print(f"pick close delay, {name}: p50 {pct(d, 0.5):.2f} ms, p99 {pct(d, 0.99):.2f} ms")
    best = {name: max(x["per_cpu_s"] for x in rs) for name, rs in runs.items()}
    ratio = best["batched"] / best["single"]
    rows = [
        Row(
            area="reports",
            measure=f"calls a CPU second of one balancer, batched reports (256 a message; "
            f"{n:,} reports, 1,000 instances){' LOSSES' if lost else ''}",
            baseline="single reports, same run",
            value=best["batched"],
            base=best["single"],
            unit="calls/CPU-s",
            ratio=ratio,
            target=">= 4x",
            met=ratio >= 4 and not lost,  # the target
        ),
    ]
    for name in ("batched",):
        d, base = delay[name], delay["single"]
        rows.append(
            Row(
                area="reports",
                measure=f"delay a report adds to a pick's close, p99 ({name}, batch_ms=5; "
                f"p50 {pct(d, 0.5):.2f} ms vs {pct(base, 0.5):.2f} ms)",
                baseline="single reports",
                value=pct(d, 0.99),
                base=pct(base, 0.99),
                unit="ms",
                ratio=pct(d, 0.99) / pct(base, 0.99) if pct(base, 0.99) else 0.0,
            )
        )
    data: dict[str, Any] = {
        "absorb": runs,
        "delay_ms": {k: [x * 1000 for x in v] for k, v in delay.items()},
    }
    emit("reports", rows, data)


async def close_delay_run(args: argparse.Namespace, batch_ms: float) -> list[float]:
    with processes() as server:
        return await close_delay(server.url, batch_ms, 2000.0, args.delay_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--delay-s", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="60,000 reports, 1 s of delays")
    args = parser.parse_args()
    if args.quick:
        args.reports = min(args.reports, 60_000)
        args.delay_s = 1.0
    asyncio.run(main(args))
