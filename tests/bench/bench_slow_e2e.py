"""One slow instance, end to end on NATS: real HTTP backends, the SDK, and each strategy.

Linkerd's "Beyond Round Robin" scenario, shorter and scaled down so that it runs on two
shared cores. A registry and a balancer run as their own processes; six aiohttp backends
(tests/bench/slow_backend.py, two processes of three) register through ServiceAgent and
heartbeat their real in-flight count every 0.25 s. Each request sleeps a lognormal latency
with a 30 ms median (sigma 0.4; Linkerd's was 167 ms: shorter, so the run is short). An
open-loop generator sends a fixed rate (200 req/s by default); each request resolves
through BalancerClient with the strategy of the phase (the ResolveRequest's `strategy`, so
no governor is needed), GETs the endpoint with a 180 ms timeout (6x the median, as
Linkerd's 1 s was of 167 ms) and reports the call. Each strategy gets a phase of its own
(30 s; --quick 12 s) in which one backend is 20x slower (600 ms, so its calls time out, as
Linkerd's 2 s backend did under a 1 s timeout) for the middle third, switched by an HTTP
admin call.

A request's latency runs from when the open loop meant to send it to its answer or its
failure (so client lag counts, and a timed-out call counts at its timeout). Percentiles
are over every request of a phase; success is the share answered 200 in time. The
baseline is round_robin in the same run (for round_robin itself: its requests outside
the slow window). The issue's 0.3x target for least_response_time against round_robin is
for the simulation; here the ratio is informative.

    python tests/bench/bench_slow_e2e.py [--quick] [--rate 200] [--phase-s 30]
                                         [--strategies round_robin,least_response_time,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
import msgspec
import nats
from harness import (
    ROOT,
    Row,
    emit,
    pct,
    processes,
    wait_for_instances,
    wait_for_responder,
    worker,
)

from schemas import subjects
from schemas.balancer import ResolveRequest
from schemas.registry import Empty
from services import logs
from services.errors import BatonError
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from nats.aio.client import Client

    from schemas.registry import Instance

SERVICE = "api"
BACKEND = str(ROOT / "tests/bench/slow_backend.py")
GROUPS = (("b1", "b2", "b3"), ("b4", "b5", "b6"))
SLOW = "b1"
MEDIAN_MS = 30.0
SIGMA = 0.4
SLOW_FACTOR = 20.0
TIMEOUT_S = 6 * MEDIAN_MS / 1000
DEFAULT_STRATEGIES = "round_robin,least_response_time,least_connections,random"


# a request of the open loop: send(due, start) -> its outcome
Send: TypeAlias = "Callable[[float, float], Coroutine[Any, Any, Outcome]]"


class Outcome(msgspec.Struct, array_like=True, gc=False):
    at: float  # when it was due, seconds into the phase
    latency: float  # seconds, from when it was due
    ok: bool
    instance: str
    lag: float  # seconds the open loop sent it late


async def request(
    client: BalancerClient, http: aiohttp.ClientSession, strategy: str, due: float, start: float
) -> Outcome:
    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    instance = ""
    ok = False
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    with contextlib.suppress(BatonError, aiohttp.ClientError, TimeoutError, nats.errors.Error):
        async with client.call(SERVICE, strategy=strategy) as ep:
            instance = ep.instance_id
            async with http.get(f"http://{ep.host}:{ep.port}/", timeout=timeout) as resp:
                await resp.read()
                resp.raise_for_status()  # a failure, reported as such by call()
        ok = True
    return Outcome(due - start, loop.time() - due, ok, instance, lag)


async def phase(
    client: BalancerClient,
    http: aiohttp.ClientSession,
    slow_url: str,
    strategy: str,
    rate: float,
    seconds: float,
) -> tuple[list[Outcome], float]:
    """Open-loop requests at `rate` for `seconds`; the slow window is the middle third."""

    def send(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
        return request(client, http, strategy, due, start)

    return await slowed_phase(http, slow_url, send, rate, seconds)


async def slowed_phase(
    http: aiohttp.ClientSession,
    slow_url: str,
    send: Send,
    rate: float,
    seconds: float,
) -> tuple[list[Outcome], float]:
    """`send` at `rate` for `seconds`, the slow backend (behind `slow_url`) 20x slower for
    the middle third; the outcomes and the CPU share this process spent."""
    loop = asyncio.get_running_loop()

    async def slow(factor: float, at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        async with http.post(slow_url, params={"factor": str(factor)}) as resp:
            resp.raise_for_status()

    start = loop.time() + 0.05
    cpu0 = time.process_time()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(slow(SLOW_FACTOR, start + seconds / 3))
        tg.create_task(slow(1.0, start + 2 * seconds / 3))
        outcomes = await sending(send, rate, seconds, start)
    cpu = (time.process_time() - cpu0) / (loop.time() - start)
    return outcomes, cpu


async def open_loop(  # the loop's parts
    client: BalancerClient,
    http: aiohttp.ClientSession,
    strategy: str,
    rate: float,
    seconds: float,
    start: float,
) -> list[Outcome]:
    """`rate` requests a second for `seconds` from `start` (the loop's clock), each sent
    when it is due however slowly the others answer: an open loop."""

    def send(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
        return request(client, http, strategy, due, start)

    return await sending(send, rate, seconds, start)


async def sending(send: Send, rate: float, seconds: float, start: float) -> list[Outcome]:
    """The open loop for any `send(due, start)`: each request sent when it is due."""
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for i in range(int(seconds * rate)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(tg.create_task(send(due, start)))
    return [t.result() for t in tasks]


def summary(outcomes: list[Outcome]) -> dict[str, float]:
    lat = [o.latency for o in outcomes]
    return {
        "requests": len(outcomes),
        "p50_ms": pct(lat, 0.5),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "success_pct": 100 * sum(o.ok for o in outcomes) / len(outcomes),
    }


def per_second(outcomes: list[Outcome], seconds: float) -> list[dict[str, float]]:
    series = []
    for s in range(int(seconds)):
        mine = [o for o in outcomes if s <= o.at < s + 1]
        if mine:
            series.append({"t": s, **summary(mine), "slow_share": share(mine)})
    return series


def share(outcomes: list[Outcome]) -> float:
    return sum(o.instance == SLOW for o in outcomes) / len(outcomes) if outcomes else 0.0


def backends() -> list[tuple[str, list[str]]]:
    """The backend processes (GROUPS), their latency model, short leases."""
    model = ["--median-ms", str(MEDIAN_MS), "--sigma", str(SIGMA)]
    lease = ["--ttl", "3", "--heartbeat-s", "0.25"]  # heartbeats often: in-flight is fresh
    return [
        (f"backends-{n}", [BACKEND, "--ids", ",".join(ids), *model, *lease])
        for n, ids in enumerate(GROUPS)
    ]


async def wait_for_fleet(nc: Client) -> list[Instance]:
    """Every backend registered and the balancer resolving: the fleet."""
    await wait_for_responder(nc, subjects.instances(SERVICE), Empty())
    fleet = await wait_for_instances(nc, SERVICE, sum(len(g) for g in GROUPS))
    await wait_for_responder(nc, subjects.resolve(SERVICE), ResolveRequest())
    return fleet


def parse_args(doc: str, *, phase_s: float, strategies: str, quick: str) -> argparse.Namespace:
    """The e2e benches' options; --quick means 12 s phases and the `quick` strategies."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    n = len(quick.split(","))
    parser.add_argument("--quick", action="store_true", help=f"12 s phases, {n} strategies")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--phase-s", type=float, default=phase_s, help="seconds per phase")
    parser.add_argument("--strategies", default=strategies)
    args = parser.parse_args()
    if args.quick:
        args.phase_s = 12.0
        if args.strategies == strategies:
            args.strategies = quick
    args.strategies = args.strategies.split(",")
    return args


async def main(args: argparse.Namespace) -> None:
    logs.configure("WARNING")
    with processes(worker("registry"), worker("balancer"), *backends()) as server:
        nc = await nats.connect(server.url)
        want = sum(len(g) for g in GROUPS)
        fleet = await wait_for_fleet(nc)
        slow = next(i for i in fleet if i.instance_id == SLOW)
        slow_url = f"http://{slow.host}:{slow.port}/admin/slow"
        client = BalancerClient(nc)
        connector = aiohttp.TCPConnector(limit=0)
        results: dict[str, dict[str, Any]] = {}
        print(
            f"slow e2e: {want} backends (median {MEDIAN_MS:g} ms, sigma {SIGMA:g}), "
            f"{args.rate:g} req/s open loop, {TIMEOUT_S * 1000:.0f} ms timeout, "
            f"{SLOW} {SLOW_FACTOR:g}x slower for the middle third of each "
            f"{args.phase_s:g} s phase"
        )
        print(
            f"{'strategy':>20} | {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'ok %':>6} | "
            f"{'slow: p99':>9} {'ok %':>6} {'share':>6} | {'lag p99':>7} {'cpu':>4}"
        )
        try:
            async with aiohttp.ClientSession(connector=connector) as http:
                for strategy in args.strategies:
                    outcomes, cpu = await phase(
                        client, http, slow_url, strategy, args.rate, args.phase_s
                    )
                    third = args.phase_s / 3
                    inside = [o for o in outcomes if third <= o.at < 2 * third]
                    outside = [o for o in outcomes if not third <= o.at < 2 * third]
                    r: dict[str, Any] = {
                        "all": summary(outcomes),
                        "slow_window": summary(inside),
                        "outside": summary(outside),
                        "slow_share": share(inside),
                        "lag_p99_ms": pct([o.lag for o in outcomes], 0.99),
                        "client_cpu": cpu,
                        "per_second": per_second(outcomes, args.phase_s),
                    }
                    results[strategy] = r
                    a, w = r["all"], r["slow_window"]
                    print(
                        f"{strategy:>20} | {a['p50_ms']:>7.1f} {a['p99_ms']:>7.1f} "
                        f"{a['p999_ms']:>8.1f} {a['success_pct']:>6.2f} | "
                        f"{w['p99_ms']:>9.1f} {w['success_pct']:>6.2f} {r['slow_share']:>6.3f} | "
                        f"{r['lag_p99_ms']:>7.1f} {cpu:>4.0%}"
                    )
        finally:
            await nc.close()
    emit("slow_e2e", rows(results, args), {"settings": settings(args), "strategies": results})


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "backends": sum(len(g) for g in GROUPS),
        "median_ms": MEDIAN_MS,
        "sigma": SIGMA,
        "slow_factor": SLOW_FACTOR,
        "timeout_ms": TIMEOUT_S * 1000,
        "rate": args.rate,
        "phase_s": args.phase_s,
    }


FIGURES = (("p50_ms", "p50", "ms"), ("p99_ms", "p99", "ms"), ("p999_ms", "p99.9", "ms"))


def rows(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[Row]:
    out: list[Row] = []
    rr = results.get("round_robin")
    for strategy, r in results.items():
        base, baseline = (
            (r["outside"], "round_robin outside the slow window")
            if strategy == "round_robin" or rr is None
            else (rr["all"], "round_robin, same run")
        )
        note = (
            " (informative: the 0.3x target is the simulation's)"
            if strategy == "least_response_time"
            else ""
        )
        for key, name, unit in (*FIGURES, ("success_pct", "success", "%")):
            value, against = r["all"][key], base[key]
            out.append(
                Row(
                    area="slow e2e",
                    measure=f"{name}, {strategy}{note if name == 'p99' else ''}",
                    baseline=baseline,
                    value=value,
                    base=against,
                    unit=unit,
                    ratio=value / against if against else 0.0,
                )
            )
    sent = sum(r["all"]["requests"] for r in results.values())
    late = max((r["lag_p99_ms"] for r in results.values()), default=0.0)
    seconds = args.phase_s * len(results)
    out.append(
        Row(
            area="slow e2e",
            measure=f"requests sent by the open loop (worst lag p99 {late:.0f} ms)",
            baseline="rate asked",
            value=sent / seconds,
            base=args.rate,
            unit="req/s",
            ratio=sent / seconds / args.rate,
        )
    )
    return out


if __name__ == "__main__":
    args = parse_args(
        __doc__,
        phase_s=30.0,
        strategies=DEFAULT_STRATEGIES,
        quick="round_robin,least_response_time,least_connections",
    )
    with contextlib.suppress(KeyboardInterrupt):  # processes() has stopped everything
        asyncio.run(main(args))
