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
    TIMEOUT_S,
    Outcome,
    backends,
    request,
    slowed_phase,
    summary,
    wait_for_fleet,
)
from harness import pct, processes, worker

from services.sdk import BalancerClient

if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine

__all__ = ["balancing"]


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
    each side's figures from its least disturbed phase."""
    outcomes: dict[str, list[list[Outcome]]] = {"Baton": [], "Envoy": []}
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
                            got, _ = await slowed_phase(
                                http, slow_url, senders[name], args.rate, args.phase_s
                            )
                            outcomes[name].append(got)
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
    return {name: least_disturbed(phases) for name, phases in outcomes.items()}


def least_disturbed(phases: list[list[Outcome]]) -> dict[str, Any]:
    """A side's figures from its phase whose open loop lagged least: latency runs from
    when a request was due, so a phase the shared machine starved the client in says
    more about the machine than about the balancer. Every phase is kept in `phases`."""
    lag = [pct([o.lag for o in got], 0.99) for got in phases]
    best = min(range(len(phases)), key=lag.__getitem__)
    return {
        **summary(phases[best]),
        "lag_p99_ms": lag[best],
        "phases": [{**summary(got), "lag_p99_ms": lag[i]} for i, got in enumerate(phases)],
    }


async def ready(http: aiohttp.ClientSession, url: str) -> None:
    """Envoy answers 200 through its cluster (its listener can be up before the cluster)."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
