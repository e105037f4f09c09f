"""Resolve throughput of two checkouts' balancers, paired: is a change slower?

Each checkout runs its own registry and balancer on its own nats-server; one client
process drives both with the same concurrency in alternating rounds (A B, then B A), so
both see the same noise of a shared machine. Prints the median of each and their ratio.

    git worktree add /tmp/base HEAD~3     # or any other checkout of Baton
    python tests/bench/ab_balancer.py /tmp/base [--concurrency 16,64] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
from harness import ROOT
from natsserver import NatsServer

from schemas import subjects
from schemas.balancer import ResolveRequest
from schemas.registry import Registration

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client

INSTANCES = 10
REQUEST = msgspec.json.encode(ResolveRequest())


@contextlib.contextmanager
def stack(root: Path) -> Iterator[str]:
    """A nats-server with the registry and balancer of the checkout at `root`."""
    server = NatsServer(Path(tempfile.mkdtemp(prefix="baton-ab-")) / "nats").start()
    env = {**os.environ, "NATS_URL": server.url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(root)}
    procs = [
        subprocess.Popen(  # noqa: S603  # the checkout's own workers
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("registry", "balancer")
    ]
    try:
        yield server.url
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        server.stop()


async def ready(nc: Client) -> None:
    """Register the fleet (waiting for the registry), then wait for resolve to answer."""
    for i in range(INSTANCES):
        reg = Registration(instance_id=f"i{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
        while True:
            try:
                await nc.request(subjects.register("api"), msgspec.json.encode(reg), timeout=1)
                break
            except nats.errors.Error:
                await asyncio.sleep(0.1)
    while True:
        with contextlib.suppress(nats.errors.Error):
            reply = await nc.request(subjects.resolve("api"), REQUEST, timeout=1)
            if not reply.headers:  # not an error reply: the balancer knows the fleet
                return
        await asyncio.sleep(0.1)


async def throughput(nc: Client, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await nc.request(subjects.resolve("api"), REQUEST, timeout=5)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    with stack(args.base.resolve()) as base_url, stack(ROOT) as this_url:
        base, this = await nats.connect(base_url), await nats.connect(this_url)
        await ready(base)
        await ready(this)
        for concurrency in args.concurrency:
            rates: dict[str, list[float]] = {"base": [], "this": []}
            for i in range(args.rounds):
                order = [("base", base), ("this", this)]
                for name, nc in order if i % 2 == 0 else order[::-1]:
                    rates[name].append(await throughput(nc, concurrency, args.seconds))
            b, t = statistics.median(rates["base"]), statistics.median(rates["this"])
            print(
                f"{concurrency} clients: base {b:,.0f} req/s, this checkout {t:,.0f} req/s "
                f"(medians of {args.rounds} rounds of {args.seconds:g} s): {t / b:.2f}x"
            )
        await base.close()
        await this.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", type=Path, help="another checkout of Baton, the baseline")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64]
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
