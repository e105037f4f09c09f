"""A fast-failing instance, end to end on NATS: outlier ejection off, then on, per strategy.

The simulation's bad deploy (sim_balancing.py), on real parts: registry, balancer and
governor as their own processes, six aiohttp backends (tests/bench/slow_backend.py, two
processes of three, 30 ms lognormal latency) kept registered by ServiceAgent, and an
open-loop generator (200 req/s) that resolves through BalancerClient with each phase's
strategy, GETs the endpoint (180 ms timeout) and reports the call, as bench_slow_e2e.py.
A quarter into each phase one backend starts answering half its requests with a 500 at
once (`POST /admin/fail?share=0.5`) until the phase ends.

Each strategy runs twice: with outlier ejection off (`baton set ... outlier.enabled=false`
through the governor) and on (the service defaults: 5 consecutive failures, success rate,
10 s sweeps, 30 s ejection, 10 % cap but one). Between phases the backend heals and
ejection is switched off, which returns every ejected instance. Success is the share of
requests answered 200 in time; the baseline is the same strategy without ejection, in the
same run. The simulation carries the 99.9 % target; these phases are short (a quarter of
each is before the deploy) and the figures informative.

    python tests/bench/bench_failing_e2e.py [--quick] [--rate 200] [--phase-s 24]
                                            [--strategies round_robin,least_connections]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import nats
from bench_slow_e2e import (
    GROUPS,
    MEDIAN_MS,
    SERVICE,
    Outcome,
    backends,
    open_loop,
    parse_args,
    summary,
    wait_for_fleet,
)
from harness import Row, emit, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import Ejections
from schemas.governor import ConfigApplied, ConfigChange, OutlierPatch
from schemas.registry import Empty
from services import logs
from services.bus import Bus
from services.sdk import BalancerClient

if TYPE_CHECKING:
    import argparse

FAILING = "b2"
FAIL_SHARE = 0.5
DEFAULT_STRATEGIES = "round_robin,least_connections,least_response_time,random"


async def set_ejection(bus: Bus, *, on: bool) -> None:
    change = ConfigChange(actor="bench", outlier=OutlierPatch(enabled=on))
    await bus.request(subjects.change(SERVICE), change, ConfigApplied)
    if not on:  # every ejected instance returns: wait until the balancer says so
        async with asyncio.timeout(15):
            while (await bus.request(subjects.ejections(SERVICE), Empty(), Ejections)).ejected:  # noqa: ASYNC110  # the state is the balancer's
                await asyncio.sleep(0.05)


async def phase(  # the phase's parts
    client: BalancerClient,
    http: aiohttp.ClientSession,
    fail_url: str,
    strategy: str,
    rate: float,
    seconds: float,
) -> list[Outcome]:
    loop = asyncio.get_running_loop()

    async def fail(share: float, at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        async with http.post(fail_url, params={"share": str(share)}) as resp:
            resp.raise_for_status()

    start = loop.time() + 0.05
    async with asyncio.TaskGroup() as tg:
        tg.create_task(fail(FAIL_SHARE, start + seconds / 4))
        outcomes = await open_loop(client, http, strategy, rate, seconds, start)
    await fail(0.0, 0.0)
    return outcomes


async def main(args: argparse.Namespace) -> None:
    logs.configure("WARNING")
    workers = (worker("registry"), worker("balancer"), worker("governor"))
    with processes(*workers, *backends()) as server:
        nc = await nats.connect(server.url)
        bus = Bus(nc, logs.get_logger("bench"))
        want = sum(len(g) for g in GROUPS)
        fleet = await wait_for_fleet(nc)
        await wait_for_responder(nc, subjects.config(SERVICE), Empty())
        bad = next(i for i in fleet if i.instance_id == FAILING)
        fail_url = f"http://{bad.host}:{bad.port}/admin/fail"
        results: dict[str, dict[str, Any]] = {}
        print(
            f"failing e2e: {want} backends (median {MEDIAN_MS:g} ms), {args.rate:g} req/s, "
            f"{FAILING} fails {FAIL_SHARE:.0%} of its calls at once from a quarter of each "
            f"{args.phase_s:g} s phase"
        )
        print(f"{'strategy':>20} | {'ejection':>8} | {'ok %':>7} {'after %':>7} {'to bad':>6}")
        try:
            async with (
                BalancerClient(nc) as client,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
            ):
                for strategy in args.strategies:
                    for on in (False, True):
                        await set_ejection(bus, on=on)
                        outcomes = await phase(
                            client, http, fail_url, strategy, args.rate, args.phase_s
                        )
                        await set_ejection(bus, on=False)
                        after = [o for o in outcomes if o.at >= args.phase_s / 4]
                        r: dict[str, Any] = {
                            "all": summary(outcomes),
                            "after": summary(after),
                            "to_failing": sum(o.instance == FAILING for o in after) / len(after),
                        }
                        results.setdefault(strategy, {})["on" if on else "off"] = r
                        print(
                            f"{strategy:>20} | {'on' if on else 'off':>8} | "
                            f"{r['all']['success_pct']:>7.2f} {r['after']['success_pct']:>7.2f} "
                            f"{r['to_failing']:>6.3f}"
                        )
        finally:
            await nc.close()
    emit("failing_e2e", rows(results), {"rate": args.rate, "phase_s": args.phase_s, **results})


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    out = []
    for strategy, r in results.items():
        on, off = r["on"]["all"]["success_pct"], r["off"]["all"]["success_pct"]
        out.append(
            Row(
                area="failing e2e",
                measure=f"success, {strategy}, ejection on (share sent to the failing "
                f"instance after the deploy {r['on']['to_failing']:.1%}, off "
                f"{r['off']['to_failing']:.1%})",
                baseline="ejection off, same run",
                value=on,
                base=off,
                unit="%",
                ratio=on / off if off else 0.0,
            )
        )
    return out


if __name__ == "__main__":
    args = parse_args(
        __doc__,
        phase_s=24.0,
        strategies=DEFAULT_STRATEGIES,
        quick="round_robin,least_connections",
    )
    t0 = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))
    print(f"({time.monotonic() - t0:.0f} s)")
