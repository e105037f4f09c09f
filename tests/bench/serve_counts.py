"""What the NATS micro counts cost on the serve path, paired in one process.

`Bus.serve`'s real message callback (decode, handler, the endpoint's counts and clock
reads) against the same callback without the counts, called directly with a resolve's
message, alternately, many times: the difference per message is the counts' cost, beside
what one resolve costs the balancer end to end (bench_resolve.py).

    python tests/bench/serve_counts.py [--messages 200000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
from nats.aio.msg import Msg
from natsserver import NatsServer

from schemas.balancer import ResolveRequest
from services import logs
from services.bus import Bus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

REPLY = b'{"instance_id":"i1","host":"127.0.0.1","port":8001}'


async def handler(_service: str, _req: ResolveRequest) -> bytes:
    return REPLY


def uncounted(bus: Bus) -> Callable[[Msg], Awaitable[None]]:
    """`serve`'s callback as it was before the counts (same reader, same reply path)."""
    read = bus._reader("balancer.v1.resolve", ResolveRequest, per_service=True)

    async def on_msg(msg: Msg) -> None:
        try:
            reply = await handler(*read(msg))
        except Exception:  # noqa: BLE001
            return
        if msg.reply and reply is not None:
            await bus.nc.publish(msg.reply, reply)

    return on_msg


async def per_message_ns(cb: Callable[[Msg], Awaitable[None]], msg: Msg, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await cb(msg)
    return (time.perf_counter_ns() - start) / n


async def main(args: argparse.Namespace) -> None:
    server = NatsServer(Path(tempfile.mkdtemp(prefix="baton-bench-")) / "nats").start()
    try:
        nc = await nats.connect(server.url)
        bus = Bus(nc, logs.get_logger("bench"))
        sub = await bus.serve("balancer.v1.resolve", ResolveRequest, handler, per_service=True)
        counted = sub._cb  # the very callback nats-py calls
        assert counted is not None
        plain = uncounted(bus)
        payload = msgspec.json.encode(ResolveRequest())
        # no reply subject: the publish (the same in both) stays out of the figure
        msg = Msg(nc, subject="balancer.v1.resolve.api", reply="", data=payload)
        with_counts: list[float] = []
        without: list[float] = []
        for i in range(args.rounds):  # A B, then B A: neither always runs warm
            pair = [(with_counts, counted), (without, plain)]
            for times, cb in pair if i % 2 == 0 else pair[::-1]:
                times.append(await per_message_ns(cb, msg, args.messages))
        for what, pick in (("fastest", min), ("median", statistics.median)):
            a, b = pick(with_counts), pick(without)
            print(
                f"serve callback, {what} of {args.rounds} rounds of {args.messages:,}: "
                f"{a:.0f} ns with the counts, {b:.0f} ns without: {a - b:+.0f} ns per "
                f"message ({a / b:.3f}x)"
            )
        await nc.close()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
