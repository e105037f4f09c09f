"""Config propagation: from a change's acknowledgement to the first resolve that obeys it.

Registry, balancer and governor run as their own processes on one nats-server. Each
round flips the service's strategy (round_robin <-> random) and then resolves in a
tight loop until an answer names the new strategy. The baseline, measured in the same
run, is a plain resolve round trip: propagation is reported in those units too.

    python tests/bench/bench_config.py [--quick] [--changes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec
import nats
from harness import Row, emit, pct, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.governor import ConfigApplied, ConfigChange
from schemas.registry import Registration


async def main(args: argparse.Namespace) -> None:
    resolve = msgspec.json.encode(ResolveRequest())
    endpoint = msgspec.json.Decoder(Endpoint).decode
    applied = msgspec.json.Decoder(ConfigApplied).decode
    with processes(*(worker(n) for n in ("registry", "balancer", "governor"))) as server:
        nc = await nats.connect(server.url)
        for i in range(10):
            reg = Registration(instance_id=f"i{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
            await wait_for_responder(nc, subjects.register("api"), reg)
        await wait_for_responder(nc, subjects.resolve("api"), ResolveRequest())
        first = ConfigChange(actor="bench", strategy="random")
        await wait_for_responder(nc, subjects.change("api"), first)

        rtts = []
        for _ in range(args.changes * 5):
            t0 = time.perf_counter()
            await nc.request(subjects.resolve("api"), resolve, timeout=5)
            rtts.append(time.perf_counter() - t0)

        delays, tries = [], []
        for n in range(args.changes):
            strategy = "round_robin" if n % 2 == 0 else "random"
            change = msgspec.json.encode(ConfigChange(actor="bench", strategy=strategy))
            reply = await nc.request(subjects.change("api"), change, timeout=5)
            acked = time.perf_counter()
            applied(reply.data)  # an error reply would not decode as ConfigApplied
            attempts = 0
            while True:
                attempts += 1
                answer = await nc.request(subjects.resolve("api"), resolve, timeout=5)
                if endpoint(answer.data).strategy == strategy:
                    delays.append(time.perf_counter() - acked)
                    tries.append(attempts)
                    break
        p50, p99 = pct(delays, 0.5), pct(delays, 0.99)
        r50 = pct(rtts, 0.5)
        obeyed_first = sum(t == 1 for t in tries) / len(tries)
        print(
            f"config propagation over {args.changes} strategy changes "
            f"(registry, balancer, governor as processes):"
        )
        print(
            f"  ack -> first obeying resolve: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {max(delays) * 1000:.2f} ms"
        )
        print(
            f"  baseline resolve round trip (same run): p50 {r50:.2f} ms; "
            f"propagation p50 = {p50 / r50:.1f} x, p99 = {p99 / r50:.1f} x a round trip"
        )
        print(
            f"  the very first resolve after the ack already obeyed in {obeyed_first:.0%} "
            "of changes"
        )
        await nc.close()
    rtt = "resolve round trip"
    emit(
        "config",
        [
            Row(
                area="config propagation",
                measure="ack -> first obeying resolve, p50",
                baseline=rtt,
                value=p50,
                base=r50,
                unit="ms",
                ratio=p50 / r50,
            ),
            Row(
                area="config propagation",
                measure="ack -> first obeying resolve, p99",
                baseline=rtt,
                value=p99,
                base=r50,
                unit="ms",
                ratio=p99 / r50,
            ),
            Row(
                area="config propagation",
                measure="changes obeyed by the first resolve",
                baseline="all changes",
                value=obeyed_first * 100,
                base=100,
                unit="%",
                ratio=obeyed_first,
            ),
        ],
        {"delays_ms": sorted(d * 1000 for d in delays), "rtt_p50_ms": r50},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 changes")
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.changes = 50
    asyncio.run(main(args))
