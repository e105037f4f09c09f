"""The gateway's HTTP resolve and its blocking queries, against baselines in the same run.

1. `GET /v1/resolve/api` through the gateway (a NATS request to the balancer behind it)
   against a bare aiohttp handler answering a fixed body: same aiohttp client, same
   concurrency, alternating rounds. Target: >= 0.5x the bare handler's requests/s.
2. The latency HTTP adds over a NATS resolve: one client, one request at a time, over
   HTTP and straight over NATS (nats-py) to the same balancer.
3. A blocking query's change -> answer latency: `GET /v1/health/service/web?index=N`
   waits; an instance registers (over NATS); the time until the answer arrives, against
   the time until the registry's event reaches a plain NATS subscriber (the floor).

All processes (nats-server, registry, balancer, gateway, the bare handler) are separate.

    python tests/bench/bench_http.py [--quick] [--seconds 3] [--rounds 5]
                                     [--concurrency 16,64] [--changes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import nats
from harness import ROOT, Row, emit, pct, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Deregistration, Registration

if TYPE_CHECKING:
    from nats.aio.client import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def drive_http(
    session: aiohttp.ClientSession, url: str, concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    decode = msgspec.json.Decoder(Endpoint).decode
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                decode(await resp.read())
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - t0), latencies


WRK = shutil.which("wrk")
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


async def drive_wrk(url: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 ms) from wrk (Debian's, a C load generator: the client is then
    never what limits the figure), one thread, `concurrency` connections."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(WRK), "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", done.stdout)
    if rate is None or p99 is None:
        raise RuntimeError(f"wrk said: {done.stdout}{done.stderr}")
    return float(rate[1]), float(p99[1]) * _UNIT[p99[2]]


async def drive_nats(nc: Client, seconds: float) -> list[float]:
    payload = msgspec.json.encode(ResolveRequest())
    decode = msgspec.json.Decoder(Endpoint).decode
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        reply = await nc.request(subjects.resolve("api"), payload, timeout=5)
        decode(reply.data)
        latencies.append(time.perf_counter() - t0)
    return latencies


async def wait_http(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never answered 200")
        await asyncio.sleep(0.1)


async def blocking(
    nc: Client, session: aiohttp.ClientSession, base: str, changes: int
) -> tuple[list[float], list[float]]:
    """(change -> blocking answer, change -> NATS event) latencies, in seconds."""
    event_at: asyncio.Queue[float] = asyncio.Queue()

    async def on_event(_msg: object) -> None:
        event_at.put_nowait(time.perf_counter())

    sub = await nc.subscribe(subjects.events("web"), cb=on_event)
    await nc.flush()
    answered: list[float] = []
    evented: list[float] = []
    url = f"{base}/v1/health/service/web"
    async with session.get(url) as resp:
        index = int(resp.headers["X-Consul-Index"])
    for n in range(changes):
        params = {"index": str(index), "wait": "30s"}
        query = asyncio.ensure_future(session.get(url, params=params))
        await asyncio.sleep(0.005)  # let the query reach the gateway and park
        if n % 2 == 0:
            msg: msgspec.Struct = Registration(
                instance_id="flip", host="127.0.0.1", port=9999, ttl_s=3600
            )
            subject = subjects.register("web")
        else:
            msg, subject = Deregistration(instance_id="flip"), subjects.deregister("web")
        t0 = time.perf_counter()
        await nc.request(subject, msgspec.json.encode(msg), timeout=5)
        resp = await query
        answered.append(time.perf_counter() - t0)
        index = int(resp.headers["X-Consul-Index"])
        resp.release()
        evented.append(await event_at.get() - t0)
    await sub.unsubscribe()
    return answered, evented


async def throughput(
    session: aiohttp.ClientSession, targets: dict[str, str], args: argparse.Namespace
) -> list[Row]:
    """Gateway against bare handler, same client and concurrency. Each round runs both,
    back to back, in an order reversed every round; the ratio is the median of the
    rounds' own ratios, so a burst of load from another process moves one round only."""
    rows: list[Row] = []
    client = "wrk" if WRK else "aiohttp client"
    print(f"http resolve ({client}): {args.rounds} rounds of {args.seconds:g} s each")
    print(f"{'clients':>7} | {'gateway req/s':>13} {'bare req/s':>10} {'median ratio':>12}")
    for conc in args.concurrency:
        rates: dict[str, list[float]] = {k: [] for k in targets}
        for url in targets.values():
            await drive_http(session, url, conc, 0.5)  # warm-up
        order = list(targets.items())
        for _ in range(args.rounds):
            for name, url in order:
                if WRK:
                    rate, _p99 = await drive_wrk(url, conc, args.seconds)
                else:
                    rate, _ = await drive_http(session, url, conc, args.seconds)
                rates[name].append(rate)
            order.reverse()
        ratio = statistics.median(
            g / b for g, b in zip(rates["gateway"], rates["bare"], strict=True)
        )
        g, b = (statistics.median(rates[k]) for k in ("gateway", "bare"))
        print(f"{conc:>7} | {g:>13,.0f} {b:>10,.0f} {ratio:>12.2f}")
        rows.append(
            Row(
                area="http",
                measure=f"GET /v1/resolve throughput, {conc} clients ({client}, median of "
                f"{args.rounds} rounds)",
                baseline="bare aiohttp handler, fixed body",
                value=g,
                base=b,
                unit="req/s",
                ratio=ratio,
                target=">= 0.5x",
                met=ratio >= 0.5,
            )
        )
    return rows


async def main(args: argparse.Namespace) -> None:
    gw_port, bare_port = _free_port(), _free_port()
    bare = ("bare-http", [str(ROOT / "tests/bench/http_fixed.py"), str(bare_port)])
    gateway = ("gateway", ["-m", "services.gateway"])
    os.environ.update(  # the gateway's settings, read by its process
        GATEWAY_HTTP_PORT=str(gw_port), GATEWAY_DNS_PORT="0", GATEWAY_CONFIG_WAIT_S="1"
    )
    with processes(worker("registry"), worker("balancer"), gateway, bare) as server:
        nc = await nats.connect(server.url)
        for i in range(args.instances):  # the first waits for the registry to come up
            reg = Registration(instance_id=f"i{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
            await wait_for_responder(nc, subjects.register("api"), reg)
        await wait_for_responder(nc, subjects.resolve("api"), ResolveRequest())
        targets = {
            "gateway": f"http://127.0.0.1:{gw_port}/v1/resolve/api",
            "bare": f"http://127.0.0.1:{bare_port}/v1/resolve/api",
        }
        rows: list[Row] = []
        connector = aiohttp.TCPConnector(limit=max(args.concurrency))
        async with aiohttp.ClientSession(connector=connector) as session:
            for url in targets.values():
                await wait_http(session, url)
            rows += await throughput(session, targets, args)
            http_lat: list[float] = []
            nats_lat: list[float] = []
            for _ in range(args.rounds):
                http_lat += (await drive_http(session, targets["gateway"], 1, args.seconds))[1]
                nats_lat += await drive_nats(nc, args.seconds)
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                h, n = pct(http_lat, q), pct(nats_lat, q)
                print(f"resolve {label}, 1 client: HTTP {h:.3f} ms, NATS {n:.3f} ms, +{h - n:.3f}")
                rows.append(
                    Row(
                        area="http",
                        measure=f"resolve {label} latency, 1 client (HTTP adds {h - n:.3f} ms)",
                        baseline="the same resolve over NATS",
                        value=h,
                        base=n,
                        unit="ms",
                        ratio=h / n,
                    )
                )
            answered, evented = await blocking(
                nc, session, f"http://127.0.0.1:{gw_port}", args.changes
            )
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            a, e = pct(answered, q), pct(evented, q)
            print(f"blocking query {label}: change -> answer {a:.3f} ms, -> NATS event {e:.3f} ms")
            rows.append(
                Row(
                    area="http",
                    measure=f"blocking query change -> answer {label}, {len(answered)} changes",
                    baseline="change -> the registry's event on a NATS subscriber",
                    value=a,
                    base=e,
                    unit="ms",
                    ratio=a / e,
                )
            )
        await nc.close()
    emit("http", rows, {"blocking_ms": [x * 1000 for x in answered]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s, 50 changes")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64]
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.changes = 1.0, 3, 50
    asyncio.run(main(args))
