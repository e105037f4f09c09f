"""Resolve throughput and latency: the balancer against a bare nats-py echo responder.

Both run as their own processes on one nats-server; the same client process drives both
with the same concurrency, in alternating rounds, and the table reports ratios measured
in this run (the machines are shared and noisy: absolute figures mean little). The CPU
each process spends a request (user + system, from /proc) is reported too: it is what
the balancer costs beyond the bare responder, and steadier than rates when other work
shares the cores.

    python tests/bench/bench_resolve.py [--quick] [--seconds 3] [--rounds 2]
                                        [--concurrency 1,16,64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING

import msgspec
import nats
from bench_collector import child, cpu_s
from harness import ROOT, Row, emit, pct, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Registration

if TYPE_CHECKING:
    from nats.aio.client import Client


async def drive(
    nc: Client, subject: str, concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    payload = msgspec.json.encode(ResolveRequest())
    decode = msgspec.json.Decoder(Endpoint).decode
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            reply = await nc.request(subject, payload, timeout=5)
            decode(reply.data)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - t0), latencies


async def main(args: argparse.Namespace) -> None:
    echo = ("echo", [str(ROOT / "tests/bench/echo_responder.py"), "bench.echo.api"])
    with processes(worker("registry"), worker("balancer"), echo) as server:
        nc = await nats.connect(server.url)
        regs = [
            Registration(instance_id=f"i{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
            for i in range(args.instances)
        ]
        for reg in regs:  # the first waits for the registry to come up
            await wait_for_responder(nc, subjects.register("api"), reg)
        await wait_for_responder(nc, subjects.resolve("api"), ResolveRequest())
        await wait_for_responder(nc, "bench.echo.api", ResolveRequest())
        targets = {"balancer": subjects.resolve("api"), "echo": "bench.echo.api"}
        pids = {"balancer": child("services.balancer"), "echo": child("echo_responder")}
        print(
            f"resolve: {args.instances} instances, strategy = service default (weighted), "
            f"{args.rounds} alternating rounds of {args.seconds:g} s each"
        )
        print(
            f"{'clients':>7} | {'balancer req/s':>14} {'echo req/s':>11} {'ratio':>6} | "
            f"{'p50 ms b/e':>12} {'p99 ms b/e':>14} {'p99 ratio':>9}"
        )
        rows: list[Row] = []
        data: dict[str, list[float]] = {"clients": [], "throughput": [], "p50": [], "p99": []}
        for conc in args.concurrency:
            rates: dict[str, list[float]] = {k: [] for k in targets}
            lats: dict[str, list[float]] = {k: [] for k in targets}
            cpus: dict[str, list[float]] = {k: [] for k in targets}  # µs a request
            await drive(nc, targets["balancer"], conc, 0.5)  # warm-up
            await drive(nc, targets["echo"], conc, 0.5)
            for _ in range(args.rounds):
                for name, subject in targets.items():
                    c0 = cpu_s(pids[name])
                    rate, lat = await drive(nc, subject, conc, args.seconds)
                    cpus[name].append((cpu_s(pids[name]) - c0) / len(lat) * 1e6)
                    rates[name].append(rate)
                    lats[name] += lat
            b, e = (sum(rates[k]) / len(rates[k]) for k in ("balancer", "echo"))
            p50b, p50e = pct(lats["balancer"], 0.5), pct(lats["echo"], 0.5)
            p99b, p99e = pct(lats["balancer"], 0.99), pct(lats["echo"], 0.99)
            print(
                f"{conc:>7} | {b:>14,.0f} {e:>11,.0f} {b / e:>6.2f} | "
                f"{p50b:>5.2f}/{p50e:<6.2f} {p99b:>6.2f}/{p99e:<7.2f} {p99b / p99e:>9.2f}"
            )
            bare = "bare nats-py responder"
            cpu_b, cpu_e = min(cpus["balancer"]), min(cpus["echo"])
            print(f"{'':>7}   CPU µs a request: balancer {cpu_b:.1f}, echo {cpu_e:.1f}")
            rows += [
                Row(
                    area="resolve",
                    measure=f"throughput, {conc} clients",
                    baseline=bare,
                    value=b,
                    base=e,
                    unit="req/s",
                    ratio=b / e,
                    target=">= 0.8x",
                    met=b / e >= 0.8,
                ),
                Row(
                    area="resolve",
                    measure=f"p50 latency, {conc} clients",
                    baseline=bare,
                    value=p50b,
                    base=p50e,
                    unit="ms",
                    ratio=p50b / p50e,
                ),
                Row(
                    area="resolve",
                    measure=f"p99 latency, {conc} clients",
                    baseline=bare,
                    value=p99b,
                    base=p99e,
                    unit="ms",
                    ratio=p99b / p99e,
                ),
                Row(
                    area="resolve",
                    measure=f"CPU µs a request of the process, {conc} clients (least of rounds)",
                    baseline=bare,
                    value=cpu_b,
                    base=cpu_e,
                    unit="µs",
                    ratio=cpu_b / cpu_e,
                ),
            ]
            for key, value in (
                ("clients", conc),
                ("throughput", b / e),
                ("p50", p50b / p50e),
                ("p99", p99b / p99e),
            ):
                data[key].append(value)
        await nc.close()
    emit("resolve", rows, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 s rounds")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64, 256]
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    asyncio.run(main(args))
