"""Collector throughput: points/s from NATS into InfluxDB, against a bare POST loop.

One influxd (Debian's 1.6.7 here) and one nats-server; the collector runs as its own
process. A publisher sends call reports as fast as NATS takes them; the figure is the
number of points divided by the time until InfluxDB holds all of them. The baseline, in
the same run and against the same influxd, is a bare loop POSTing the same lines to
/write in batches of the same size, gzip-compressed as the collector does.

    python tests/bench/bench_collector.py [--points 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import msgspec
import nats
from harness import processes, worker
from influxserver import InfluxServer

from schemas import subjects
from schemas.balancer import CallReport
from services.collector import points

BATCH = 5000


def count(influx: InfluxServer, db: str) -> int:
    result = influx.query('SELECT count("latency_ms") FROM calls', db=db)
    series = result["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


async def wait_count(influx: InfluxServer, db: str, n: int, timeout: float = 300) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await asyncio.to_thread(count, influx, db) >= n:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"InfluxDB holds {count(influx, db)} of {n} points")


async def bare_post(influx: InfluxServer, n: int) -> float:
    influx.query("CREATE DATABASE bare", db="")
    clock = points.Clock()
    report = CallReport(instance_id="i1", latency_ms=1.5)
    lines = [points.call("load", report, "z", clock()) for _ in range(n)]
    url = f"{influx.url}/write?" + urllib.parse.urlencode({"db": "bare", "precision": "ns"})
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        for i in range(0, n, BATCH):
            body = gzip.compress("\n".join(lines[i : i + BATCH]).encode(), compresslevel=1)
            async with http.post(url, data=body, headers={"Content-Encoding": "gzip"}) as reply:
                assert reply.status == 204, await reply.text()
    done = await wait_count(influx, "bare", n)
    return n / (done - t0)


async def collector_run(influx: InfluxServer, n: int) -> float:
    with processes(worker("collector")) as server:
        nc = await nats.connect(server.url)
        # the collector creates the database when it is up; wait for that
        deadline = time.monotonic() + 20
        while "baton" not in json.dumps(influx.query("SHOW DATABASES", db="")):
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not create its database")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # its subscriptions are live once it has logged ready
        payload = msgspec.json.encode(CallReport(instance_id="i1", latency_ms=1.5))
        subject = subjects.report("load")
        t0 = time.perf_counter()
        for i in range(n):
            await nc.publish(subject, payload)
            if i % 1000 == 0:
                await nc.flush()  # keep the client's buffer from running away
        await nc.flush()
        done = await wait_count(influx, "baton", n)
        await nc.close()
        return n / (done - t0)


async def main(args: argparse.Namespace) -> None:
    influx = InfluxServer(Path(tempfile.mkdtemp(prefix="baton-bench-influx-"))).start()
    os.environ["INFLUX_URL"] = influx.url  # for the collector process
    try:
        bare = await bare_post(influx, args.points)
        collected = await collector_run(influx, args.points)
        print(f"collector: {args.points:,} call reports from NATS into InfluxDB {influx.url}")
        print(f"  collector       {collected:>10,.0f} points/s")
        print(f"  bare POST loop  {bare:>10,.0f} points/s (same lines, batches of {BATCH}, gzip)")
        print(f"  ratio           {collected / bare:>10.2f}")
    finally:
        influx.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=200_000)
    asyncio.run(main(parser.parse_args()))
