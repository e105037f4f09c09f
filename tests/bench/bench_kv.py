"""The config center against bare JetStream KV, every ratio from one run.

The kv worker and the gateway run as their own processes on one nats-server; the bare
baseline is a JetStream KV bucket on the same server, read and watched with nats-py.

- read: `kv.v1.get.{key}` answered by the kv worker, against a bare KV `get` (a direct
  get the server answers itself), requests per second with 16 in flight
- change -> watcher: from a put sent to an SDK watch's callback, and to a Consul
  blocking query's answer (the gateway), against a bare KV put to its watch; p50 and p99
  (from the put sent, not its acknowledgement: the store republishes a change as it
  stores it, so a watcher hears of it before the writer's reply comes back)
- keys: the kv worker's and the gateway's memory (RSS) holding N keys (100,000; --quick
  10,000), against the same processes empty
- fan-out: 1,000 watchers of one prefix (subscriptions on 4 connections): from a put
  sent until all have seen it, against one watcher's p50

    python tests/bench/bench_kv.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import nats
from bench_scale import rss
from harness import Row, emit, pct, running, wait_for_responder, worker_env
from natscluster import free_port
from natsserver import NatsServer

from schemas import subjects
from schemas.kv import KvEntry, KvPut, KvQuery
from services.sdk import KvClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.kv import KeyValue

VALUE = b"x" * 100  # a typical small setting


async def _rate(call: Callable[[], Awaitable[None]], seconds: float, inflight: int = 16) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(inflight)))
    return done / (time.perf_counter() - t0)


async def reads(nc: Client, bucket: KeyValue, seconds: float) -> tuple[float, float]:
    get = msgspec.json.encode(KvQuery())
    subject = subjects.kv_subject(subjects.KV_GET, "bench/read")

    async def baton() -> None:
        await nc.request(subject, get, timeout=5)

    async def bare() -> None:
        await bucket.get("bench.read")

    await _rate(baton, 0.5)  # warm both
    await _rate(bare, 0.5)
    # alternating slices, so a busy moment of a shared host falls on both alike
    rates: dict[str, list[float]] = {"baton": [], "bare": []}
    for _ in range(4):
        rates["baton"].append(await _rate(baton, seconds / 4))
        rates["bare"].append(await _rate(bare, seconds / 4))
    return sum(rates["baton"]) / 4, sum(rates["bare"]) / 4


async def latencies(nc: Client, bucket: KeyValue, port: int, rounds: int) -> dict[str, list[float]]:
    """put ack -> SDK callback, -> blocking query answer; bare put ack -> KV watch."""
    client = KvClient(nc, actor="bench")
    seen: asyncio.Queue[tuple[KvEntry, float]] = asyncio.Queue()
    out: dict[str, list[float]] = {"sdk": [], "consul": [], "bare": []}
    async with client.watch("lat/", lambda e: seen.put_nowait((e, time.perf_counter()))):
        for n in range(rounds):
            sent = time.perf_counter()
            await client.put("lat/k", str(n))
            entry, at = await asyncio.wait_for(seen.get(), 5)
            assert entry.value == str(n).encode()
            out["sdk"].append(at - sent)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/v1/kv/block/k"
        await client.put("block/k", "0")
        for n in range(rounds):
            async with session.get(url) as reply:
                index = reply.headers["X-Consul-Index"]
            params = {"index": index, "wait": "30s"}
            blocked = asyncio.ensure_future(session.get(url, params=params))
            await asyncio.sleep(0.005)  # let it park: a query that has not blocked yet
            sent = time.perf_counter()
            await client.put("block/k", str(n + 1))
            async with await blocked as reply:
                await reply.read()
            out["consul"].append(time.perf_counter() - sent)
    watcher = await bucket.watch("bare.>")
    await watcher.updates(timeout=5)  # type: ignore[no-untyped-call]  # untyped in nats-py
    for n in range(rounds):
        sent = time.perf_counter()
        await bucket.put("bare.k", str(n).encode())
        update = await watcher.updates(timeout=5)  # type: ignore[no-untyped-call]
        assert update is not None
        out["bare"].append(time.perf_counter() - sent)
    await watcher.stop()  # type: ignore[no-untyped-call]  # untyped in nats-py
    return out


async def fill(nc: Client, keys: int) -> None:
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            put = msgspec.json.encode(KvPut(value=VALUE, actor="bench"))
            subject = subjects.kv_subject(subjects.KV_PUT, f"fill/{i:06d}")
            await nc.request(subject, put, timeout=30)

    await asyncio.gather(*(one(i) for i in range(keys)))


async def fan_out(url: str, nc: Client, watchers: int, rounds: int) -> tuple[list[float], float]:
    conns = [await nats.connect(url) for _ in range(4)]
    seen = [0] * rounds
    done = [asyncio.Event() for _ in range(rounds)]
    arrived: list[float] = [0.0] * rounds

    def make(rnd: list[int]) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            del msg
            n = rnd[0]
            seen[n] += 1
            if seen[n] == watchers:
                arrived[n] = time.perf_counter()
                done[n].set()

        return on_msg

    current = [0]
    for i in range(watchers):
        await conns[i % 4].subscribe(subjects.kv_watch("fan/"), cb=make(current))
    for c in conns:
        await c.flush()
    client = KvClient(nc, actor="bench")
    one_watcher: list[float] = []
    single = await nats.connect(url)
    got: asyncio.Queue[float] = asyncio.Queue()

    async def on_single(msg: Msg) -> None:
        del msg
        got.put_nowait(time.perf_counter())

    times = []
    for n in range(rounds):
        current[0] = n
        sent = time.perf_counter()
        await client.put("fan/k", str(n))
        await asyncio.wait_for(done[n].wait(), 30)
        times.append(arrived[n] - sent)
    for c in conns:
        await c.close()
    sub = await single.subscribe(subjects.kv_watch("fan/"), cb=on_single)
    await single.flush()
    for n in range(rounds):
        sent = time.perf_counter()
        await client.put("fan/k", str(n))
        one_watcher.append(await asyncio.wait_for(got.get(), 5) - sent)
    await sub.unsubscribe()
    await single.close()
    return times, pct(one_watcher, 0.5)


async def main(args: argparse.Namespace) -> None:
    keys = 10_000 if args.quick else 100_000
    rounds = 50 if args.quick else 200
    seconds = 2.0 if args.quick else 5.0
    work = Path(tempfile.mkdtemp(prefix="baton-bench-kv-"))
    server = NatsServer(work / "nats").start()
    env = worker_env(server.url)
    port = free_port()
    gw_env = {**env, "GATEWAY_HTTP_PORT": str(port), "GATEWAY_DNS_PORT": "0"}
    commands = [
        (work / "kv.log", ["-m", "services.kv"], env),
        (work / "gateway.log", ["-m", "services.gateway"], gw_env),
    ]
    try:
        with running(commands) as (kv_proc, gw_proc):
            nc = await nats.connect(server.url)
            put = KvPut(value=VALUE, actor="bench")
            await wait_for_responder(nc, subjects.kv_subject(subjects.KV_PUT, "bench/read"), put)
            await wait_for_responder(nc, subjects.srv("PING", "baton-gateway"), KvQuery())
            js = nc.jetstream()
            bucket = await js.create_key_value(bucket="BENCH")
            await bucket.put("bench.read", VALUE)
            empty = {"kv": rss(kv_proc.pid), "gateway": rss(gw_proc.pid)}

            baton_rate, bare_rate = await reads(nc, bucket, seconds)
            lat = await latencies(nc, bucket, port, rounds)
            fan, single_p50 = await fan_out(server.url, nc, 1000, 20 if args.quick else 50)
            t0 = time.perf_counter()
            await fill(nc, keys)
            fill_s = time.perf_counter() - t0
            full = {"kv": rss(kv_proc.pid), "gateway": rss(gw_proc.pid)}
            await nc.close()
    finally:
        server.stop()
    bare50 = pct(lat["bare"], 0.5)
    rows = [
        Row(
            area="config center",
            measure="key reads/s over NATS (16 in flight)",
            baseline="bare JetStream KV get",
            value=baton_rate,
            base=bare_rate,
            unit="req/s",
            ratio=baton_rate / bare_rate,
            target=">= 0.8x",
            met=baton_rate / bare_rate >= 0.8,
        ),
    ]
    for who, name in (("sdk", "SDK watch"), ("consul", "Consul blocking query")):
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            value, base = pct(lat[who], q), pct(lat["bare"], q)
            rows.append(
                Row(
                    area="config center",
                    measure=f"put sent -> {name}, {label}",
                    baseline=f"bare KV watch, {label}",
                    value=value,
                    base=base,
                    unit="ms",
                    ratio=value / base,
                )
            )
    for who in ("kv", "gateway"):
        per_key = (full[who] - empty[who]) / keys
        rows.append(
            Row(
                area="config center",
                measure=f"{who} memory holding {keys:,} keys (100-byte values)",
                baseline="the same process empty",
                value=full[who] / 2**20,
                base=empty[who] / 2**20,
                unit="MiB",
                ratio=full[who] / empty[who],
                target=f"{per_key:,.0f} B/key",
            )
        )
    fan50, fan99 = pct(fan, 0.5), pct(fan, 0.99)
    rows.append(
        Row(
            area="config center",
            measure="put sent -> all of 1,000 prefix watchers, p50",
            baseline="one watcher, p50",
            value=fan50,
            base=single_p50,
            unit="ms",
            ratio=fan50 / single_p50,
        )
    )
    print(
        f"config center: {keys:,} keys stored in {fill_s:.1f} s ({keys / fill_s:,.0f} puts/s, "
        f"64 in flight); fan-out p99 {fan99:.2f} ms; bare watch p50 {bare50:.2f} ms"
    )
    emit("kv", rows, {"latency_ms": {k: [v * 1000 for v in vs] for k, vs in lat.items()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args()))
