"""Scale: registry memory per instance, and resolve throughput, at 10, 1,000 and 100,000
instances.

For each size, a registry and a balancer run as their own processes on a nats-server of
their own, all at once, so resolve is measured in alternating rounds across sizes (the
machines are shared and noisy: figures taken minutes apart would not compare).

The fleet is shaped the way a user would see it grow: the service resolved, `api`, holds
all of it at 10 instances and a tenth of it beyond (100, then 10,000 instances); the rest
are services of 100 instances each (9, then 900). Every instance registers as an SDK
would: a host of its own, port 8080, one of three zones, a version, metadata
{"max_inflight": "100"}, ttl 3600 s. Registration is pipelined (`--inflight` requests at
once). The balancer is in sync when a sentinel instance registered after the others
resolves (it follows the registry's events in order) and registry.v1.services lists every
service. Registries run with REGISTRY_SETTLE_S=0, i.e. settled, as in steady state (an
unsettled one has the balancer re-read it every second for its first 20 s).

Memory: VmRSS from /proc after registration and sync, before any resolve, minus the same
process's VmRSS with no instance, divided by the instances. No garbage collection can be
forced from outside; nothing the workers keep per instance is cyclic garbage.
Resolve: `--clients` clients for `--seconds`, `--rounds` times per size, strategy = the
service default, sizes in turn (reversed every other round); the target is the median
over rounds of throughput at 100,000 against at 10 in the same round.

    python tests/bench/bench_scale.py [--quick] [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats
from harness import Row, emit, processes, wait_for_responder, worker

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.errors import ERROR_CODE_HEADER
from schemas.registry import Empty, Registration, ServiceList

if TYPE_CHECKING:
    from nats.aio.client import Client

SIZES = (10, 1_000, 100_000)
PER_SERVICE = 100
ZONES = ("zone-a", "zone-b", "zone-c")
KB = 1024

_encode = msgspec.json.Encoder().encode


def layout(size: int) -> dict[str, int]:
    """Instances per service for a fleet of `size`: `api` is all of it, then a tenth."""
    api = size if size <= PER_SERVICE // 10 else size // 10
    rest = size - api
    shape = {"api": api}
    shape.update({f"s{k}": PER_SERVICE for k in range(rest // PER_SERVICE)})
    return shape


def registration(service: str, i: int) -> bytes:
    iid = f"{service}-{i}"
    n = zlib.crc32(iid.encode())  # a pod address of its own
    return _encode(
        Registration(
            instance_id=iid,
            host=f"10.{n >> 16 & 0xFF}.{n >> 8 & 0xFF}.{n & 0xFF}",
            port=8080,
            zone=ZONES[i % 3],
            version="1.4.2",
            metadata={"max_inflight": "100"},
            ttl_s=3600,
        )
    )


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KB
    msg = f"no VmRSS for {pid}"
    raise RuntimeError(msg)


def child(module: str, url: str) -> int:
    """The pid of this process's child running `python -m <module>` against `url`."""
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == me and module.encode() in cmd and f"NATS_URL={url}".encode() in env:
            return int(proc.name)
    msg = f"no child runs {module} on {url}"
    raise RuntimeError(msg)


async def register(nc: Client, todo: list[tuple[str, int]], inflight: int) -> None:
    """Register (service, index) pairs, `inflight` requests at a time; fail on any error."""
    for start in range(0, len(todo), inflight):
        replies = await asyncio.gather(
            *(
                nc.request(subjects.register(s), registration(s, i), timeout=30)
                for s, i in todo[start : start + inflight]
            )
        )
        for reply in replies:
            if reply.headers and ERROR_CODE_HEADER in reply.headers:
                msg = f"registration refused: {reply.data!r}"
                raise RuntimeError(msg)


async def synced(nc: Client, size: int, services: set[str]) -> None:
    """Return once the balancer has every event so far and the registry lists `services`."""
    sentinel = f"sync{size}"
    await register(nc, [(sentinel, 0)], 1)
    decode = msgspec.json.Decoder(ServiceList).decode
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = await nc.request(subjects.resolve(sentinel), b"{}", timeout=30)
        if not (reply.headers and ERROR_CODE_HEADER in reply.headers):
            break
        await asyncio.sleep(0.05)
    else:
        msg = "the balancer never caught up"
        raise RuntimeError(msg)
    listed = decode((await nc.request(subjects.SERVICES, b"{}", timeout=30)).data)
    missing = services - set(listed.services)
    if missing:
        msg = f"registry.v1.services lacks {len(missing)} services"
        raise RuntimeError(msg)


async def resolve_rate(nc: Client, seconds: float, clients: int, at_least: int = 0) -> float:
    """Resolves/s on `api` for `seconds` (and on, until `at_least` were answered)."""
    payload = _encode(ResolveRequest())
    decode = msgspec.json.Decoder(Endpoint).decode
    subject = subjects.resolve("api")
    done = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < stop or done < at_least:
            decode((await nc.request(subject, payload, timeout=5)).data)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - t0)


class Stack:
    """One nats-server with a registry and a balancer, holding a fleet of one size."""

    def __init__(self, size: int, url: str, nc: Client) -> None:
        self.size = size
        self.nc = nc
        self.pids = {
            "registry": child("services.registry", url),
            "balancer": child("services.balancer", url),
        }
        self.empty: dict[str, int] = {}
        self.rates: list[float] = []

    def rss(self) -> dict[str, int]:
        return {name: rss(pid) for name, pid in self.pids.items()}


async def build(size: int, url: str, inflight: int) -> tuple[Stack, dict[str, float]]:
    """Start from an empty registry, register a fleet of `size`; the figures of that."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    await wait_for_responder(nc, subjects.SERVICES, Empty())
    await wait_for_responder(nc, subjects.resolve("api"), ResolveRequest())
    stack = Stack(size, url, nc)
    await asyncio.sleep(0.5)
    stack.empty = stack.rss()
    shape = layout(size)
    t0 = time.perf_counter()
    await register(nc, [(s, i) for s, n in shape.items() for i in range(n)], inflight)
    took = time.perf_counter() - t0
    await synced(nc, size, set(shape))
    await asyncio.sleep(0.5)  # let the workers finish what they were at
    mem = stack.rss()
    return stack, {
        "instances": size,
        "api_instances": shape["api"],
        "services": len(shape),
        "register_s": took,
        "registry_rss": mem["registry"],
        "balancer_rss": mem["balancer"],
        "registry_b_per_instance": (mem["registry"] - stack.empty["registry"]) / size,
        "balancer_b_per_instance": (mem["balancer"] - stack.empty["balancer"]) / size,
    }


async def main(args: argparse.Namespace) -> None:
    os.environ["REGISTRY_SETTLE_S"] = "0"
    results: list[dict[str, float]] = []
    stacks: list[Stack] = []
    with contextlib.ExitStack() as running:
        servers = [
            running.enter_context(processes(worker("registry"), worker("balancer")))
            for _ in args.sizes
        ]
        print(
            f"scale: one registry + balancer per size, each on its own nats-server; resolve "
            f"on `api`, {args.clients} clients, {args.rounds} rounds of {args.seconds:g} s "
            "per size, sizes alternating"
        )
        print(
            f"{'instances':>9} {'api':>6} {'services':>8} {'reg s':>6} | "
            f"{'registry B/inst':>15} {'balancer B/inst':>15} | {'resolve/s':>9}"
        )
        for size, server in zip(args.sizes, servers, strict=True):
            stack, row = await build(size, server.url, args.inflight)
            stacks.append(stack)
            results.append(row)
        # Warm-up to the steady state of a long-running balancer: the pickers are built,
        # and every instance of `api` has been handed out once (its answer is encoded
        # once, then reused: services/balancer/replies.py).
        for stack, row in zip(stacks, results, strict=True):
            await resolve_rate(stack.nc, 0.5, args.clients, int(row["api_instances"]) * 2)
        for r in range(args.rounds):
            # sizes in turn, the order reversed every other round, so drift in the
            # machine's speed falls on every size alike
            for stack in stacks if r % 2 == 0 else stacks[::-1]:
                stack.rates.append(await resolve_rate(stack.nc, args.seconds, args.clients))
        for stack, row in zip(stacks, results, strict=True):
            row["resolve_s"] = statistics.median(stack.rates)
            # each round against the smallest size's in the same round: the ratio the
            # target is on, robust to a round the shared machine slowed for every size
            row["resolve_vs_smallest"] = statistics.median(
                mine / base for mine, base in zip(stack.rates, stacks[0].rates, strict=True)
            )
            print(
                f"{stack.size:>9,} {row['api_instances']:>6,.0f} {row['services']:>8,.0f} "
                f"{row['register_s']:>6.1f} | {row['registry_b_per_instance']:>15,.0f} "
                f"{row['balancer_b_per_instance']:>15,.0f} | {row['resolve_s']:>9,.0f}"
            )
            await stack.nc.close()
    emit("scale", rows(results), {"sizes": results})


def rows(results: list[dict[str, float]]) -> list[Row]:
    first, last = results[0], results[-1]
    n = f"{last['instances']:,.0f}"
    ratio = last["resolve_vs_smallest"]  # the median of the rounds' paired ratios
    out = [
        Row(
            area="scale",
            measure=f"registry memory per instance at {n}",
            baseline="1 KB",
            value=last["registry_b_per_instance"],
            base=KB,
            unit="B",
            ratio=last["registry_b_per_instance"] / KB,
            target="< 1 KB",
            met=last["registry_b_per_instance"] < KB,
        ),
        Row(
            area="scale",
            measure=f"resolve/s at {n} instances ({last['api_instances']:,.0f} in api; "
            "ratio: median of same-round ratios)",
            baseline=f"at {first['instances']:,.0f}",
            value=last["resolve_s"],
            base=first["resolve_s"],
            unit="req/s",
            ratio=ratio,
            target=">= 0.9x",
            met=ratio >= 0.9,  # the target
        ),
    ]
    # RSS grows in 4 KiB pages: per instance it means something from 1,000 instances on
    out += [
        Row(
            area="scale",
            measure=f"{who} memory per instance at {r['instances']:,.0f} (info)",
            baseline="1 KB",
            value=r[f"{who}_b_per_instance"],
            base=KB,
            unit="B",
            ratio=r[f"{who}_b_per_instance"] / KB,
        )
        for r in results
        if r["instances"] >= 1000
        for who in ("registry", "balancer")
        if (who, r) != ("registry", last)  # that one is the target's row
    ]
    out += [
        Row(
            area="scale",
            measure=f"resolve/s at {r['instances']:,.0f} instances (info)",
            baseline=f"at {first['instances']:,.0f}",
            value=r["resolve_s"],
            base=first["resolve_s"],
            unit="req/s",
            ratio=r["resolve_vs_smallest"],
        )
        for r in results[1:-1]
    ]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per size")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES)
    )
    ns = parser.parse_args()
    if ns.quick:
        ns.seconds, ns.rounds = 1.0, 1
    asyncio.run(main(ns))
