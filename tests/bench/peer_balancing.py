"""Balancing, for bench_peers.py: bench_slow_e2e.py's fleet (six aiohttp backends, one
20x slower for the middle third of each phase) behind Baton's SDK with
least_response_time and behind Envoy with LEAST_REQUEST, in alternating phases.

Envoy runs with its defaults (peer_servers.envoy): power of two choices by active
requests, no retries, no outlier detection; the route's timeout is the clients' (180 ms).
Both see the same open loop (`--rate` requests a second) from the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp
import nats
import peer_servers
from bench_slow_e2e import (
    SLOW,
    SLOW_FACTOR,
    TIMEOUT_S,
    Outcome,
    backends,
    request,
    summary,
    wait_for_fleet,
)
from harness import pct, processes, worker

from services.sdk import BalancerClient

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine

__all__ = ["balancing"]


async def open_phase(
    http: aiohttp.ClientSession,
    slow_url: str,
    send: Callable[[float, float], Coroutine[Any, Any, Outcome]],
    rate: float,
    seconds: float,
) -> list[Outcome]:
    """bench_slow_e2e.py's phase for any sender: `rate` requests a second, open loop, the
    slow backend 20x slower for the middle third."""
    loop = asyncio.get_running_loop()

    async def slow(factor: float, at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        async with http.post(slow_url, params={"factor": str(factor)}) as resp:
            resp.raise_for_status()

    start = loop.time() + 0.05
    async with asyncio.TaskGroup() as tg:
        tg.create_task(slow(SLOW_FACTOR, start + seconds / 3))
        tg.create_task(slow(1.0, start + 2 * seconds / 3))
        tasks: list[asyncio.Task[Outcome]] = []
        for i in range(int(seconds * rate)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(tg.create_task(send(due, start)))
    return [t.result() for t in tasks]


async def via_envoy(http: aiohttp.ClientSession, url: str, due: float, start: float) -> Outcome:
    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    instance, ok = "", False
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(url, timeout=timeout) as resp:
            body = await resp.json(content_type=None) if resp.status == 200 else {}
            instance = str(body.get("instance_id", ""))
            ok = resp.status == 200
    return Outcome(due - start, loop.time() - due, ok, instance, lag)


async def balancing(args: argparse.Namespace) -> dict[str, Any]:
    """Each side a phase a round, `--rounds` rounds, the order reversed every other one;
    each side's requests pooled over its phases."""
    outcomes: dict[str, list[Outcome]] = {"Baton": [], "Envoy": []}
    with processes(worker("registry"), worker("balancer"), *backends()) as server:
        nc = await nats.connect(server.url)
        client = BalancerClient(nc)
        try:
            fleet = await wait_for_fleet(nc)
            slow = next(i for i in fleet if i.instance_id == SLOW)
            slow_url = f"http://{slow.host}:{slow.port}/admin/slow"
            hosts = [(i.host, i.port) for i in fleet]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                with peer_servers.envoy(hosts, TIMEOUT_S * 1000) as proxy:
                    url = f"http://127.0.0.1:{proxy.port}/"
                    await ready(http, url)

                    def sdk(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
                        return request(client, http, "least_response_time", due, start)

                    def envoy(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
                        return via_envoy(http, url, due, start)

                    senders = {"Baton": sdk, "Envoy": envoy}
                    for r in range(args.rounds):
                        for name in list(senders)[:: 1 if r % 2 == 0 else -1]:
                            got = await open_phase(
                                http, slow_url, senders[name], args.rate, args.phase_s
                            )
                            outcomes[name] += got
                            s = summary(got)
                            print(
                                f"   balancing, {name}: p99 {s['p99_ms']:.1f} ms, "
                                f"success {s['success_pct']:.2f} %, the open loop's lag p99 "
                                f"{pct([o.lag for o in got], 0.99):.1f} ms",
                                flush=True,
                            )
        finally:
            await client.aclose()
            await nc.close()
    return {name: summary(got) for name, got in outcomes.items()}


async def ready(http: aiohttp.ClientSession, url: str) -> None:
    """Envoy answers 200 through its cluster (its listener can be up before the cluster)."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
