"""Collector throughput: points/s from NATS into InfluxDB, against a bare POST loop.

One influxd (Debian's 1.6.7 here); each round gets a fresh nats-server and database.
Three sides, in alternating rounds (`--rounds`), all fed the same call reports (10
services x 100 instances, varied latencies, 2 % errors):

- collector: `python -m services.collector` as its own process. The whole feed is written
  into NATS at once through a raw socket (prebuilt PUB lines, so the load generator costs
  next to no CPU on this 2-core machine); the figure is the number of points divided by
  the time from the first byte sent until InfluxDB holds every one of them. A point lost
  anywhere (a slow consumer, a dropped batch) stalls the count and fails the run.
- bare POST loop (the baseline): the same lines the collector writes, prebuilt outside
  the timing, POSTed to /write of the same influxd in batches of the collector's size,
  gzip level 1 as the collector does, one request at a time; timed until InfluxDB holds
  them all.
- collector, batched reports: the same collector and the same reports, as the SDK sends
  them: `CallReports` of up to 256 reports (one service each) on balancer.v1.reports.
- bare subscriber: a nats-py subscriber that only counts (this script with
  `--subscriber`), fed the same way: nats-py's own cost, the ceiling of any collector
  written with it.

Each side's best round is reported. CPU time per point of the collector process and of
influxd (user + sys from /proc across the run) are steadier than rates on a shared
machine and are reported too.

    python tests/bench/bench_collector.py [--quick] [--points 200000] [--rounds 2]
    python tests/bench/bench_collector.py --profile /tmp/collector.txt  # py-spy, round 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import nats
from harness import Row, emit, processes, worker
from influxserver import InfluxServer

from schemas import subjects
from schemas.balancer import CallReport
from services.collector import points
from services.collector.worker import CollectorSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg

HERE = Path(__file__).resolve()
BATCH = CollectorSettings().batch_points
SERVICES = 10
INSTANCES = 100  # a service
COUNT_SUBJECT = "bench.collector.count"  # the bare subscriber answers with its count
STALL_S = 15.0  # no progress this long: points were lost


def reports(n: int) -> list[tuple[str, CallReport]]:
    """(service, report) pairs, as a fleet of 1,000 instances would send them."""
    return [
        (
            f"svc{i % SERVICES}",
            CallReport(
                instance_id=f"i{i % (SERVICES * INSTANCES)}",
                latency_ms=(i % 4999) / 10,
                ok=i % 50 != 0,
            ),
        )
        for i in range(n)
    ]


def wire(feed: list[tuple[str, CallReport]]) -> bytes:
    """The feed as NATS PUB lines, ready to write to a socket."""
    encode = msgspec.json.Encoder().encode
    out = bytearray()
    for service, report in feed:
        payload = encode(report)
        out += b"PUB %s %d\r\n%s\r\n" % (subjects.report(service).encode(), len(payload), payload)
    return bytes(out)


def wire_batched(feed: list[tuple[str, CallReport]], size: int = 256) -> bytes:
    """The feed as the SDK batches it (CallReports of up to `size`, one service each),
    encoded as the SDK encodes it."""
    encode = msgspec.json.Encoder().encode
    by_service: dict[str, list[CallReport]] = {}
    for service, report in feed:
        by_service.setdefault(service, []).append(report)
    out = bytearray()
    for service, reports in by_service.items():
        for i in range(0, len(reports), size):
            payload = b'{"reports":[' + b",".join(map(encode, reports[i : i + size])) + b"]}"
            subject = subjects.reports(service).encode()
            out += b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload)
    return bytes(out)


async def blast(url: str, data: bytes) -> None:
    """Write `data` (PUB lines) to the nats-server at `url` and wait until it has read it."""
    parsed = urllib.parse.urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false,"name":"bench-publisher"}\r\n')
    for i in range(0, len(data), 1 << 20):
        writer.write(data[i : i + (1 << 20)])
        await writer.drain()
    writer.write(b"PING\r\n")
    await writer.drain()
    while (line := await reader.readline()) and not line.startswith(b"PONG"):
        if line.startswith(b"-ERR"):
            raise RuntimeError(f"nats-server refused the feed: {line!r}")
    writer.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(marker: str) -> int:
    """The pid of this process's child whose command line holds `marker`."""
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            if (
                proc.name.isdigit()
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == me
                and marker in (proc / "cmdline").read_text()
            ):
                return int(proc.name)
    raise LookupError(f"no child process running {marker}")


def spy_on(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy (from the venv) recording process `pid` into `out`, raw (collapsed stacks)."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    args = [spy, "record", "-f", "raw", "-r", "500", "-o", out, "-p", str(pid)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603  # our own child


def count(influx: InfluxServer, db: str) -> int:
    result = influx.query('SELECT count("latency_ms") FROM calls', db=db)
    series = result["results"][0].get("series")  # type: ignore[index]  # JSON as parsed
    return int(series[0]["values"][0][1]) if series else 0


async def wait_until(
    what: str, n: int, seen: Callable[[], Awaitable[int]], *, stall_s: float = STALL_S
) -> float:
    """perf_counter() once `seen()` reaches n; an error once it stops moving short of it
    for `stall_s`."""
    last, since = -1, time.perf_counter()
    while (got := await seen()) < n:
        now = time.perf_counter()
        if got != last:
            last, since = got, now
        elif now - since > stall_s:
            raise RuntimeError(f"{what}: {n - got:,} of {n:,} points lost (stuck at {got:,})")
        await asyncio.sleep(0.02)
    return time.perf_counter()


def written_ok(influx: InfluxServer) -> int:
    """Points influxd has taken over HTTP since it started, from /debug/vars: far cheaper
    to ask often than a count, which competes for the CPU with the side being timed."""
    with urllib.request.urlopen(influx.url + "/debug/vars", timeout=10) as reply:  # noqa: S310  # our own influxd
        stats = json.load(reply)
    return sum(
        int(v["values"]["pointsWrittenOK"]) for k, v in stats.items() if k.startswith("httpd:")
    )


async def in_influx(what: str, influx: InfluxServer, db: str, n: int) -> float:
    """perf_counter() once database `db` holds n points: first watched through influxd's
    cheap counter (every database's points), then confirmed with a count of `db`."""
    base = await asyncio.to_thread(written_ok, influx)

    async def written() -> int:
        return await asyncio.to_thread(written_ok, influx) - base

    await wait_until(what, n, written)
    return await wait_until(what, n, lambda: asyncio.to_thread(count, influx, db))


class Side(msgspec.Struct):
    rate: float  # points (or messages) a second
    cpu_us: float  # CPU µs a point of the process under test
    influx_cpu_us: float = 0.0  # CPU µs a point of influxd


async def bare_post(influx: InfluxServer, lines: list[str], db: str, in_flight: int = 1) -> Side:
    influx.query(f'CREATE DATABASE "{db}"', db="")
    url = f"{influx.url}/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
    assert influx.proc is not None
    i0, c0 = cpu_s(influx.proc.pid), time.process_time()
    watch = asyncio.ensure_future(in_influx("bare POST loop", influx, db, len(lines)))
    await asyncio.sleep(0.05)  # it has read the counter
    t0 = time.perf_counter()
    starts = iter(range(0, len(lines), BATCH))

    async def loop(http: aiohttp.ClientSession) -> None:
        for i in starts:  # shared: each batch goes once, whichever loop is free
            body = gzip.compress("\n".join(lines[i : i + BATCH]).encode(), 1, mtime=0)
            async with http.post(url, data=body, headers=headers) as reply:
                assert reply.status == 204, await reply.text()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(loop(http) for _ in range(in_flight)))
    c1 = time.process_time()
    done = await watch
    n = len(lines)
    return Side(n / (done - t0), (c1 - c0) / n * 1e6, (cpu_s(influx.proc.pid) - i0) / n * 1e6)


async def collector_run(
    influx: InfluxServer, feed: bytes, n: int, db: str, profile: str | None
) -> Side:
    os.environ["INFLUX_URL"] = influx.url  # for the collector process
    os.environ["INFLUX_DATABASE"] = db
    with processes(worker("collector")) as server:
        pid = child("services.collector")
        nc = await nats.connect(server.url)
        # up once it has created its database and subscribed (its own health point
        # would be too late to wait for); a message it is not yet there for is lost
        deadline = time.monotonic() + 20
        while db not in str(influx.query("SHOW DATABASES", db="")) or not await subscribed(nc):
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not come up")
            await asyncio.sleep(0.05)
        await nc.close()
        spy = None
        if profile:
            spy = spy_on(pid, profile)
            await asyncio.sleep(1)  # attached
        assert influx.proc is not None
        c0, i0 = cpu_s(pid), cpu_s(influx.proc.pid)
        watch = asyncio.ensure_future(in_influx("collector", influx, db, n))
        await asyncio.sleep(0.05)  # it has read the counter
        t0 = time.perf_counter()
        await blast(server.url, feed)
        done = await watch
        side = Side(
            n / (done - t0), (cpu_s(pid) - c0) / n * 1e6, (cpu_s(influx.proc.pid) - i0) / n * 1e6
        )
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        return side


async def subscribed(nc: Client) -> bool:
    """Whether something in queue group `collector` takes call reports already: the
    server's subscription count is not exposed, so ask its monitoring-free way: a
    request on a report subject gets "no responders" until someone listens."""
    try:
        await nc.request(subjects.report("bench-probe"), b"{}", timeout=0.2)
    except nats.errors.NoRespondersError:
        return False
    except nats.errors.TimeoutError:
        return True  # someone listens and (rightly) does not answer
    return True


async def subscriber_run(feed: bytes, n: int) -> Side:
    with processes(("subscriber", [str(HERE), "--subscriber"])) as server:
        pid = child("--subscriber")
        nc = await nats.connect(server.url)
        deadline = time.monotonic() + 20
        while not await subscribed(nc):
            if time.monotonic() > deadline:
                raise TimeoutError("the bare subscriber did not come up")
            await asyncio.sleep(0.05)

        async def seen() -> int:
            reply: Msg = await nc.request(COUNT_SUBJECT, b"", timeout=30)
            return int(reply.data)

        probes = await seen()  # the probes above were received too
        c0 = cpu_s(pid)
        t0 = time.perf_counter()
        await blast(server.url, feed)
        done = await wait_until("bare subscriber", n + probes, seen)
        cpu = cpu_s(pid) - c0
        await nc.close()
        return Side(n / (done - t0), cpu / n * 1e6)


async def subscriber_main() -> None:
    """The bare subscriber: counts call reports, nothing more; answers its count."""
    nc = await nats.connect(os.environ["NATS_URL"])
    received = 0

    async def on_report(_msg: Msg) -> None:
        nonlocal received
        received += 1

    async def on_count(msg: Msg) -> None:
        await msg.respond(str(received).encode())

    await nc.subscribe(subjects.every(subjects.REPORT), queue="collector", cb=on_report)
    await nc.subscribe(COUNT_SUBJECT, cb=on_count)
    await nc.flush()
    await asyncio.Event().wait()


async def main(args: argparse.Namespace) -> None:
    n = args.points
    feed = reports(n)
    clock = points.Clock()
    lines = [points.call(service, report, "", clock()) for service, report in feed]
    data = wire(feed)
    batched = wire_batched(feed)
    influx = InfluxServer(Path(tempfile.mkdtemp(prefix="baton-bench-influx-"))).start()
    sides: dict[str, list[Side]] = {
        "collector": [],
        "collector_batched": [],
        "bare_post": [],
        "bare_post_2": [],
        "subscriber": [],
    }
    try:
        for r in range(args.rounds):
            sides["bare_post"].append(await bare_post(influx, lines, f"bare{r}"))
            # the collector keeps two writes in flight: so, for comparison, a loop that does
            sides["bare_post_2"].append(await bare_post(influx, lines, f"bare2_{r}", 2))
            profile = args.profile if r == 0 else None
            sides["collector"].append(await collector_run(influx, data, n, f"col{r}", profile))
            sides["collector_batched"].append(
                await collector_run(influx, batched, n, f"colb{r}", None)
            )
            sides["subscriber"].append(await subscriber_run(data, n))
            for name, runs in sides.items():
                s = runs[-1]
                print(
                    f"round {r + 1} {name:<11} {s.rate:>9,.0f} /s  {s.cpu_us:5.2f} CPU µs a"
                    f" point" + (f", influxd {s.influx_cpu_us:4.2f}" if s.influx_cpu_us else "")
                )
    finally:
        influx.stop()
    best = {name: max(runs, key=lambda s: s.rate) for name, runs in sides.items()}
    col, bare, sub = best["collector"], best["bare_post"], best["subscriber"]
    bare2 = best["bare_post_2"]
    cpu = min(s.cpu_us for s in sides["collector"])
    sub_cpu = min(s.cpu_us for s in sides["subscriber"])
    colb = best["collector_batched"]
    cpu_b = min(s.cpu_us for s in sides["collector_batched"])
    print(f"collector: {n:,} call reports from NATS into InfluxDB, best of {args.rounds} rounds")
    emit(
        "collector",
        [
            Row(
                area="collector",
                measure=f"points/s NATS to InfluxDB ({n:,} call reports)",
                baseline=f"bare POST loop, batches of {BATCH}, gzip",
                value=col.rate,
                base=bare.rate,
                unit="points/s",
                ratio=col.rate / bare.rate,
                target=">= 0.5x",
                met=col.rate / bare.rate >= 0.5,
            ),
            Row(
                area="collector",
                measure=f"points/s NATS to InfluxDB, batched call reports ({n:,}, 256 a message)",
                baseline=f"bare POST loop, batches of {BATCH}, gzip",
                value=colb.rate,
                base=bare.rate,
                unit="points/s",
                ratio=colb.rate / bare.rate,
                target=">= 0.5x",
                met=colb.rate / bare.rate >= 0.5,
            ),
            Row(
                area="collector",
                measure="calls/s absorbed, batched reports against single (same run)",
                baseline="single reports",
                value=colb.rate,
                base=col.rate,
                unit="calls/s",
                ratio=colb.rate / col.rate,
            ),
            Row(
                area="collector",
                measure="calls a CPU second of the collector, batched against single (same run)",
                baseline="single reports",
                value=1e6 / cpu_b,
                base=1e6 / cpu,
                unit="calls/CPU-s",
                ratio=cpu / cpu_b,
                target=">= 4x",
                met=cpu / cpu_b >= 4,
            ),
            Row(
                area="collector",
                measure="points/s, against a POST loop with two writes in flight too (info)",
                baseline=f"bare POST loop, 2 in flight, batches of {BATCH}, gzip",
                value=col.rate,
                base=bare2.rate,
                unit="points/s",
                ratio=col.rate / bare2.rate,
            ),
            Row(
                area="collector",
                measure="ceiling: msgs/s of a nats-py subscriber that only counts",
                baseline="bare POST loop",
                value=sub.rate,
                base=bare.rate,
                unit="msgs/s",
                ratio=sub.rate / bare.rate,
            ),
            Row(
                area="collector",
                measure="CPU µs a point, collector process",
                baseline="nats-py subscriber that only counts",
                value=cpu,
                base=sub_cpu,
                unit="µs",
                ratio=cpu / sub_cpu,
            ),
        ],
        {name: [msgspec.structs.asdict(s) for s in runs] for name, runs in sides.items()},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="50,000 points")
    parser.add_argument("--profile", help="py-spy raw profile of the collector, round 1")
    parser.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscriber_main())
    else:
        if args.quick:
            args.points = min(args.points, 50_000)
        asyncio.run(main(args))
