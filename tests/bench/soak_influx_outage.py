"""InfluxDB stopped for a minute under load, then restarted: does every point arrive?

The collector runs as its own process; a publisher sends call reports at a steady rate
before, during and after the outage. Prints points sent, stored, and the collector's
dropped count (read back from its own health points).

    python tests/bench/soak_influx_outage.py [--outage-s 60] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
from bench_collector import count, wait_until
from harness import processes, worker
from influxserver import InfluxServer

from schemas import subjects
from schemas.balancer import CallReport

if TYPE_CHECKING:
    from nats.aio.client import Client


async def publish(nc: Client, rate: int, seconds: float) -> int:
    payload = msgspec.json.encode(CallReport(instance_id="i1", latency_ms=1.0))
    sent = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            await nc.publish(subjects.report("soak"), payload)
        sent += due
        await asyncio.sleep(0.01)
    return sent


async def main(args: argparse.Namespace) -> None:
    influx = InfluxServer(Path(tempfile.mkdtemp(prefix="baton-soak-influx-"))).start()
    os.environ["INFLUX_URL"] = influx.url
    try:
        with processes(worker("collector")) as server:
            nc = await nats.connect(server.url)
            await asyncio.sleep(3)  # the collector connects and creates its database
            sent = await publish(nc, args.rate, 5)
            influx.stop()
            print(f"influxd stopped; publishing {args.rate}/s for {args.outage_s:g} s")
            sent += await publish(nc, args.rate, args.outage_s)
            influx.start()
            print("influxd restarted")
            sent += await publish(nc, args.rate, 5)
            await nc.flush()
            t0 = time.perf_counter()
            try:
                # the collector's backoff reaches 30 s during a long outage: allow for it
                await wait_until(
                    "soak", sent, partial(asyncio.to_thread, count, influx, "baton"), stall_s=60
                )
            finally:
                stored = count(influx, "baton")
            print(
                f"sent {sent}, stored {stored} ({stored / sent:.2%}); "
                f"caught up {time.perf_counter() - t0:.1f} s after the restart's last publish"
            )
            await nc.close()
    finally:
        influx.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage-s", type=float, default=60)
    parser.add_argument("--rate", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
