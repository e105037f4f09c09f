"""Heartbeat ingest: heartbeats/s the registry absorbs against a bare nats-py subscriber.

The registry and the baseline (decode_subscriber.py: decode each Heartbeat with msgspec,
nothing more) run as their own processes on one nats-server. First 1,000 instances are
registered (10 services x 100, ttl 3600 s), so every heartbeat renews a real lease. One
client process then sends heartbeats carrying load (inflight, cpu, mem, latency_ms) as the
SDK does, round-robin over the instances, to each target in alternating rounds.

"Absorbed" means processed, not published: heartbeats go out in windows of `--window`
plain publishes followed by one heartbeat sent as a request. A subscriber handles one
connection's messages in order, so the reply to the request means the whole window was
processed; `--depth` windows are kept in flight so the worker never waits for the client.
After the run the registry's and the server's logs are checked for a slow consumer or a
dropped heartbeat, and every lease must show a heartbeat from the last round; anything
amiss is printed and marks the target missed.

The client's own ceiling (publishing into a subject nobody listens to) is printed too: a
baseline near that ceiling means the client, not the baseline, set the pace.

    python tests/bench/bench_ingest.py [--quick] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import time
from typing import TYPE_CHECKING

import msgspec
import nats
from harness import ROOT, Row, emit, processes, wait_for_responder, worker

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER
from schemas.registry import Heartbeat, InstanceList, Registration

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg

BARE = "bench.heartbeat"  # the baseline's prefix: same subject shape, its own subscription
SERVICES = 10
PER_SERVICE = 100

# lines in a log that mean a heartbeat was dropped or refused
LOSS_MARKS = ("slow consumer", "slowconsumer", "bus.message_dropped", "bus.error")


def beats(prefix: str) -> list[tuple[str, bytes]]:
    """One heartbeat per instance, as (subject, payload), with load values like the SDK's."""
    encode = msgspec.json.Encoder().encode
    return [
        (
            f"{prefix}.svc{s}",
            encode(
                Heartbeat(
                    instance_id=f"i{s}-{i}", inflight=i % 8, cpu=0.25, mem=0.5, latency_ms=12.5
                )
            ),
        )
        for s in range(SERVICES)
        for i in range(PER_SERVICE)
    ]


def check(reply: Msg) -> None:
    if reply.headers and ERROR_CODE_HEADER in reply.headers:
        msg = f"heartbeat refused: {reply.headers} {reply.data!r}"
        raise RuntimeError(msg)


async def ingest(nc: Client, feed: Iterator[tuple[str, bytes]], args: argparse.Namespace) -> float:
    """Heartbeats/s processed: windows of plain publishes, each closed by a request."""
    pending: collections.deque[asyncio.Future[Msg]] = collections.deque()
    sent = 0
    t0 = time.perf_counter()
    stop = t0 + args.seconds
    while time.perf_counter() < stop:
        for subject, data in itertools.islice(feed, args.window):
            await nc.publish(subject, data)
        subject, data = next(feed)
        pending.append(asyncio.ensure_future(nc.request(subject, data, timeout=30)))
        sent += args.window + 1
        if len(pending) >= args.depth:
            check(await pending.popleft())
    while pending:
        check(await pending.popleft())
    return sent / (time.perf_counter() - t0)


async def ceiling(nc: Client, feed: Iterator[tuple[str, bytes]], seconds: float) -> float:
    """What this client can publish at all (to a subject nobody listens to)."""
    sent = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for subject, data in itertools.islice(feed, 1000):
            await nc.publish("bench.void." + subject, data)
        sent += 1000
        await nc.flush()
    return sent / (time.perf_counter() - t0)


async def register_all(nc: Client) -> None:
    encode = msgspec.json.Encoder().encode
    first = Registration(instance_id="i0-0", host="127.0.0.1", port=8000, ttl_s=3600)
    await wait_for_responder(nc, subjects.register("svc0"), first)  # the registry is up
    requests = [
        nc.request(
            subjects.register(f"svc{s}"),
            encode(
                Registration(instance_id=f"i{s}-{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
            ),
            timeout=30,
        )
        for s in range(SERVICES)
        for i in range(PER_SERVICE)
    ]
    for reply in await asyncio.gather(*requests):
        check(reply)


async def stale_leases(nc: Client, since: float) -> int:
    """Instances whose last_seen predates `since`: their heartbeats were not absorbed."""
    decode = msgspec.json.Decoder(InstanceList).decode
    stale = 0
    for s in range(SERVICES):
        reply = await nc.request(subjects.instances(f"svc{s}"), b"{}", timeout=5)
        listed = decode(reply.data).instances
        stale += PER_SERVICE - sum(i.last_seen.timestamp() >= since for i in listed)
    return stale


async def main(args: argparse.Namespace) -> list[Row]:
    bare = ("bare", [str(ROOT / "tests/bench/decode_subscriber.py"), BARE])
    with processes(worker("registry"), bare) as server:
        work = server.log_path.parent.parent
        nc = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
        await register_all(nc)
        hb = Heartbeat(instance_id="i0-0")
        await wait_for_responder(nc, f"{BARE}.svc0", hb)
        feeds = {
            "registry": itertools.cycle(beats(subjects.HEARTBEAT)),
            "bare": itertools.cycle(beats(BARE)),
        }
        top = await ceiling(nc, itertools.cycle(beats("x")), 1.0)
        print(
            f"ingest: {SERVICES * PER_SERVICE:,} instances, windows of {args.window:,} "
            f"publishes + 1 request, {args.depth} windows in flight, {args.rounds} "
            f"alternating rounds of {args.seconds:g} s; client ceiling {top:,.0f} msg/s"
        )
        rates: dict[str, list[float]] = {k: [] for k in feeds}
        for feed in feeds.values():  # warm-up
            await ingest(nc, feed, argparse.Namespace(**{**vars(args), "seconds": 0.5}))
        t_last = 0.0
        for r in range(args.rounds):
            t_last = time.time()
            for name, feed in feeds.items():
                rates[name].append(await ingest(nc, feed, args))
            print(
                f"  round {r + 1}: registry {rates['registry'][-1]:>9,.0f} hb/s   "
                f"bare {rates['bare'][-1]:>9,.0f} hb/s"
            )
        stale = await stale_leases(nc, t_last)
        await nc.close()
    lost = [
        f"{log.name}: {line.strip()[:160]}"
        for log in (work / "registry.log", work / "nats" / "nats.log")
        for line in log.read_text(errors="replace").splitlines()
        if any(mark in line.lower() for mark in LOSS_MARKS)
    ]
    if stale:
        lost.append(f"registry: {stale} leases not renewed in the last round")
    for line in lost[:10]:
        print("  LOSS:", line)
    reg, base = (sum(rates[k]) / len(rates[k]) for k in ("registry", "bare"))
    ratio = reg / base
    print(f"  mean: registry {reg:,.0f} hb/s, bare {base:,.0f} hb/s = {ratio:.2f}x")
    rows = [
        Row(
            area="heartbeat ingest",
            measure="heartbeats/s processed, 1,000 leases" + (" (LOSS seen)" if lost else ""),
            baseline="bare nats-py decoding subscriber",
            value=reg,
            base=base,
            unit="hb/s",
            ratio=ratio,
            target=">= 0.6x",
            met=ratio >= 0.6 and not lost,  # the target
        ),
        Row(
            area="heartbeat ingest",
            measure="client publish ceiling (info)",
            baseline="bare nats-py decoding subscriber",
            value=top,
            base=base,
            unit="msg/s",
            ratio=top / base,
        ),
    ]
    emit(
        "ingest",
        rows,
        {"registry_hb_s": rates["registry"], "bare_hb_s": rates["bare"], "ceiling": top},
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=4)
    ns = parser.parse_args()
    if ns.quick:
        ns.seconds, ns.rounds = 1.0, 2
    asyncio.run(main(ns))
