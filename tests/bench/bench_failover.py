"""Failure detection: how long a SIGKILLed instance is still resolved, against its ttl_s.

A registry and a balancer run as their own processes; three steady instances and, per
trial, one victim (each a real aiohttp backend kept registered by the SDK's ServiceAgent,
in tests/bench/slow_backend.py) heartbeat as the SDK does (every ttl_s / 3, as the
registry asks). Clients resolve round_robin continuously and record which instance each
answer names and when it arrived. The bench also listens on the heartbeat subject: the
victim cannot say when it last heartbeated once it is SIGKILLed, so its last heartbeat is
the last one seen on the wire. Per trial:

    delay = (arrival of the last resolve answer naming the victim) - (its last heartbeat)

The contract says an instance silent for ttl_s is unhealthy and never resolved; the
registry checks leases every sweep_s (0.1 s by default), and a replica judges silence
only up to its last successful lease write (every 0.2 s, PROOF_INTERVAL_S: so that a
replica cut off from the quorum never declares the fleet silent), so the promise it can
keep is delay <= ttl_s + proof + sweep_s. Resolves that named the victim after it was
killed are calls that would have failed; they are counted against every resolve answered
from the kill to the last one naming it (with round_robin over four instances, about a quarter).

    python tests/bench/bench_failover.py [--quick] [--trials 5] [--ttls 1,3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

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
    worker_env,
)

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.registry import Empty, Heartbeat, InstanceEvent
from services.registry import RegistrySettings
from services.registry.leader import PROOF_INTERVAL_S

if TYPE_CHECKING:
    from nats.aio.client import Client

SERVICE = "api"
BACKEND = str(ROOT / "tests/bench/slow_backend.py")
STEADY = ("steady-1", "steady-2", "steady-3")
RESOLVERS = 4  # concurrent resolve loops: about one answer naming the victim every few ms


class Watch:
    """What the bench sees on the wire: resolve answers, heartbeats and registry events."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, str]] = []  # (arrival, instance id)
        self.last_beat: dict[str, float] = {}
        self.unhealthy: dict[str, float] = {}  # first `unhealthy` event per instance
        self.errors = 0
        self.resolved: dict[str, asyncio.Event] = {}  # set once a beat and an answer were seen

    async def resolve_loop(self, nc: Client, stop: asyncio.Event) -> None:
        payload = msgspec.json.encode(ResolveRequest(strategy="round_robin"))
        decode = msgspec.json.Decoder(Endpoint).decode
        subject = subjects.resolve(SERVICE)
        while not stop.is_set():
            try:
                reply = await nc.request(subject, payload, timeout=1)
                iid = decode(reply.data).instance_id
                self.answers.append((time.monotonic(), iid))
                if iid in self.last_beat:
                    self.resolved.setdefault(iid, asyncio.Event()).set()
            except (nats.errors.Error, msgspec.DecodeError):
                self.errors += 1  # an error reply (503 while none is healthy) or a timeout
            await asyncio.sleep(0.002)

    async def subscribe(self, nc: Client) -> None:
        beat = msgspec.json.Decoder(Heartbeat).decode
        event = msgspec.json.Decoder(InstanceEvent).decode

        async def on_beat(msg: Any) -> None:
            self.last_beat[beat(msg.data).instance_id] = time.monotonic()

        async def on_event(msg: Any) -> None:
            e = event(msg.data)
            if e.kind == "unhealthy":
                self.unhealthy.setdefault(e.instance.instance_id, time.monotonic())

        await nc.subscribe(subjects.heartbeat(SERVICE), cb=on_beat)
        await nc.subscribe(subjects.events(SERVICE), cb=on_event)


def spawn(url: str, iid: str, ttl_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603  # our own backend, to kill for real
        [sys.executable, BACKEND, "--ids", iid, "--ttl", str(ttl_s)],
        env=worker_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


async def trial(url: str, watch: Watch, ttl_s: float, iid: str) -> dict[str, Any]:
    victim = spawn(url, iid, ttl_s)
    try:
        resolved = watch.resolved.setdefault(iid, asyncio.Event())
        await asyncio.wait_for(resolved.wait(), 20)  # registered, heartbeating, resolved
        # Killed at a random phase of its heartbeat interval, after a few heartbeats.
        await asyncio.sleep(ttl_s * random.uniform(0.7, 1.2))
        killed = time.monotonic()
        victim.kill()  # SIGKILL: no deregistration
        await asyncio.sleep(2 * ttl_s + 0.5)  # past unhealthy and expiry
    finally:
        victim.kill()
        victim.wait()
    beat = watch.last_beat[iid]
    named = [t for t, i in watch.answers if i == iid]
    last = max(named)
    exposed = sum(1 for t, _ in watch.answers if killed < t <= last)
    return {
        "instance": iid,
        "ttl_s": ttl_s,
        "killed_after_beat_s": killed - beat,
        "delay_s": last - beat,
        "ratio": (last - beat) / ttl_s,
        "unhealthy_event_s": watch.unhealthy.get(iid, float("nan")) - beat,
        "resolves_exposed": exposed,  # every answer from the kill to the last naming it
        "dead_resolves": sum(1 for t in named if t > killed),
        "late_resolves": sum(1 for t in named if t > beat + ttl_s),
    }


async def main(args: argparse.Namespace) -> None:
    sweep_s = RegistrySettings().sweep_s + PROOF_INTERVAL_S  # what the registry may add
    steady = ("steady", [BACKEND, "--ids", ",".join(STEADY), "--ttl", "3"])
    with processes(worker("registry"), worker("balancer"), steady) as server:
        nc = await nats.connect(server.url)
        await wait_for_responder(nc, subjects.instances(SERVICE), Empty())
        await wait_for_instances(nc, SERVICE, len(STEADY))
        await wait_for_responder(nc, subjects.resolve(SERVICE), ResolveRequest())
        watch = Watch()
        await watch.subscribe(nc)
        stop = asyncio.Event()
        loops = [asyncio.create_task(watch.resolve_loop(nc, stop)) for _ in range(RESOLVERS)]
        trials: list[dict[str, Any]] = []
        print(
            f"failover: 3 steady instances + 1 victim, {RESOLVERS} round_robin resolve loops, "
            f"registry sweep_s + lease proof = {sweep_s:g} s"
        )
        print(
            f"{'ttl_s':>5} {'trial':>5} | {'killed after beat':>17} {'unhealthy evt':>13} "
            f"{'last resolve':>12} {'/ ttl':>6} | {'dead resolves':>13} {'of':>5} {'past ttl':>8}"
        )
        try:
            for ttl_s in args.ttls:
                for k in range(args.trials):
                    t = await trial(server.url, watch, ttl_s, f"victim-{ttl_s:g}-{k}")
                    trials.append(t)
                    print(
                        f"{ttl_s:>5g} {k:>5} | {t['killed_after_beat_s']:>16.3f}s "
                        f"{t['unhealthy_event_s']:>12.3f}s {t['delay_s']:>11.3f}s "
                        f"{t['ratio']:>6.3f} | {t['dead_resolves']:>13} "
                        f"{t['resolves_exposed']:>5} {t['late_resolves']:>8}"
                    )
                    watch.answers.clear()
        finally:
            stop.set()
            await asyncio.gather(*loops)
            await nc.close()
    print(f"resolve errors over the run: {watch.errors}")
    emit("failover", rows(trials, sweep_s), {"sweep_s": sweep_s, "trials": trials})


def rows(trials: list[dict[str, Any]], sweep_s: float) -> list[Row]:
    out: list[Row] = []
    for ttl_s in sorted({t["ttl_s"] for t in trials}):
        mine = [t for t in trials if t["ttl_s"] == ttl_s]
        bound = (ttl_s + sweep_s) / ttl_s  # the promise, in units of ttl_s
        target = f"<= {bound:.3g}x (ttl_s + {sweep_s:g} s sweep and lease proof)"
        delays = [t["delay_s"] for t in mine]
        for name, q in (("p50", 0.5), ("max", 1.0)):
            value = pct(delays, q) / 1000  # pct gives ms of seconds; back to seconds
            out.append(
                Row(
                    area="failover",
                    measure=f"{name} last beat -> last resolve, ttl_s={ttl_s:g}, {len(mine)} kills",
                    baseline="ttl_s",
                    value=value,
                    base=ttl_s,
                    unit="s",
                    ratio=value / ttl_s,
                    target=target,
                    met=value / ttl_s <= bound,
                )
            )
        dead = sum(t["dead_resolves"] for t in mine)
        total = sum(t["resolves_exposed"] for t in mine)
        out.append(
            Row(
                area="failover",
                measure=f"resolves naming a killed instance, ttl_s={ttl_s:g} (calls that fail)",
                baseline="all resolves from the kill to the last naming it",
                value=dead,
                base=total,
                unit="resolves",
                ratio=dead / total if total else 0.0,
            )
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 trials per ttl_s")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument(
        "--ttls", type=lambda s: [float(x) for x in s.split(",")], default=[1.0, 3.0]
    )
    args = parser.parse_args()
    if args.quick:
        args.trials = 2
    with contextlib.suppress(KeyboardInterrupt):  # processes() has stopped everything
        asyncio.run(main(args))
