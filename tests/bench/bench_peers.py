"""Side by side with the systems people use instead: Baton, etcd, ZooKeeper and Envoy, on
the same machine, in the same run, doing the same work (peer_systems.py says how each
is used). One system runs at a time, on servers of its own started for it.

1. Registration storm: `--storm` instances registered at once (1,000 in flight): rate
   of acknowledged registrations, and time until a watcher has seen every one.
2. Propagation: one registration to a watcher knowing it, `--propagations` times.
3. Failure detection: the process owning an instance is SIGKILLed at a random phase of
   its keep-alive; time until a watcher learns it is gone. Each system at its floor:
   Baton ttl_s=1 (the contract's minimum); etcd's lease TTL asked for 1 s, granted 2 s
   (etcd raises a TTL to its floor, 1.5 election timeouts rounded up to a second: 2 s
   with its default 100 ms heartbeat and 1 s election timeout; the bench reads the
   grant); ZooKeeper's session timeout 4 s (2 x tickTime, the server's
   minSessionTimeout, with Debian's and ZooKeeper's default tickTime of 2000 ms).
4. Discovery reads: 64 concurrent clients asking for an endpoint of a 100-instance
   service (Baton: the SDK's resolve; etcd: a range read of the prefix and a pick;
   ZooKeeper: the children and a pick): requests/s and p99.
5. Memory: server-side bytes per registered instance, the slope of what the server
   holds from the count after the storms to `--memory` instances (services of 100).
   Baton: the registry's RSS plus nats-server's; etcd: etcd's RSS; ZooKeeper: the JVM's
   live heap after a full collection (`jcmd GC.run`, then `GC.heap_info`): the JVM's RSS
   moves in steps of heap it commits, collected or not, so it says little per instance;
   the live heap is the least ZooKeeper needs, which favours it.
6. Balancing: bench_slow_e2e.py's fleet (six aiohttp backends, one 20x slower for the
   middle third), an open loop through Baton's SDK with least_response_time and through
   Envoy's LEAST_REQUEST (Envoy's defaults; the route's timeout is the clients').

    python tests/bench/bench_peers.py [--quick] [--storm 10000] [--memory 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec
import nats
import peer_servers
import peer_table
from bench_scale import child, rss
from harness import ROOT, emit, pct, processes, wait_for_responder, worker, worker_env
from peer_balancing import balancing
from peer_systems import BatonSystem, EtcdSystem, System, ZkSystem, in_window

from schemas import subjects
from schemas.registry import Empty
from services import logs

if TYPE_CHECKING:
    from collections.abc import Callable

SYSTEMS = ["Baton", "etcd", "ZooKeeper", "Envoy"]
# the lowest keep-alive setting each takes (etcd's: what it grants when asked for 1 s)
FLOOR_S = {"Baton": 1.0, "etcd": 1.0, "ZooKeeper": 2 * peer_servers.ZK_TICK_MS / 1000}
WINDOW = 1_000  # registrations in flight in a storm, as bench_storm.py
READERS = 64
READ_INSTANCES = 100
PORT = 9000


class Seen:
    """What one watcher has learnt: when each instance appeared and disappeared."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.waiting: dict[tuple[str, bool], asyncio.Event] = {}
        self.count_wanted = 0
        self.all_seen = asyncio.Event()

    def on_change(self, iid: str, present: bool, at: float) -> None:
        seen = self.added if present else self.gone
        seen.setdefault(iid, at)
        if (ev := self.waiting.get((iid, present))) is not None:
            ev.set()
        if self.count_wanted and len(self.added) >= self.count_wanted:
            self.all_seen.set()

    async def wait(self, iid: str, present: bool, timeout: float) -> float:
        seen = self.added if present else self.gone
        if iid not in seen:
            ev = self.waiting.setdefault((iid, present), asyncio.Event())
            await asyncio.wait_for(ev.wait(), timeout)
        return seen[iid]


async def propagation(system: System, n: int, tag: str) -> list[float]:
    seen = Seen()
    service = f"prop{tag}"
    await system.watch(service, seen.on_change)
    delays = []
    for i in range(n):
        t0 = time.monotonic()
        await system.register(service, f"p{i}", PORT)
        delays.append(await seen.wait(f"p{i}", present=True, timeout=30) - t0)
    return delays


async def reads(system: System, seconds: float) -> dict[str, float]:
    await system.pick("reads")
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await system.pick("reads")
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(READERS)))
    rate = len(latencies) / (time.perf_counter() - t0)
    return {"rate": rate, "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99)}


async def failure(
    system: System, spawn: Callable[[str], subprocess.Popen[bytes]], floor_s: float, iid: str
) -> float:
    seen = Seen()
    await system.watch(f"fail-{iid}", seen.on_change)
    victim = spawn(iid)
    try:
        await seen.wait(iid, present=True, timeout=60)
        # killed at a random phase of its keep-alive, after a few of them
        await asyncio.sleep(floor_s * random.uniform(0.7, 1.2))
        killed = time.monotonic()
        victim.kill()  # SIGKILL: nothing said on the way out
        return await seen.wait(iid, present=False, timeout=5 * floor_s + 20) - killed
    finally:
        victim.kill()
        victim.wait()


async def storm(system: System, n: int, tag: str) -> dict[str, float]:
    seen = Seen()
    seen.count_wanted = n
    service = f"storm{tag}"
    await system.watch(service, seen.on_change)
    ids = [f"s{i:06}" for i in range(n)]
    t0 = time.monotonic()
    await in_window(ids, WINDOW, lambda iid: system.register(service, iid, PORT))
    acked = time.monotonic() - t0
    await asyncio.wait_for(seen.all_seen.wait(), 300)
    return {"rate": n / acked, "acked_s": acked, "watched_s": max(seen.added.values()) - t0}


def service_of(iid: str) -> str:
    """The memory fleet's service of an instance `m<n>`: a service every 100."""
    return f"m{int(iid[1:]) // 100}"


def resident(pids: list[int]) -> Callable[[], int]:
    """What a server holds, as the RSS of its processes."""
    return lambda: sum(rss(p) for p in pids)


async def memory(
    system: System, weigh: Callable[[], int], held: int, upto: int
) -> dict[str, float]:
    """The slope of what the server holds over the instances registered from `held` to
    `upto`, in services of 100."""
    await asyncio.sleep(1)  # let the storm's buffers go before the first reading
    before = await asyncio.to_thread(weigh)
    ids = [f"m{i}" for i in range(upto - held)]
    await in_window(ids, WINDOW, lambda iid: system.register(service_of(iid), iid, PORT))
    await asyncio.sleep(1)
    after = await asyncio.to_thread(weigh)
    return {
        "from": held,
        "to": upto,
        "bytes_before": before,
        "bytes_after": after,
        "b_per_instance": (after - before) / (upto - held),
    }


class Contender:
    """One registry under test: how to drive it, kill its instances and weigh its server."""

    def __init__(
        self,
        system: System,
        spawn: Callable[[str], subprocess.Popen[bytes]],
        weigh: Callable[[], int],
        floor_s: float,
    ) -> None:
        self.name = system.name
        self.system = system
        self.spawn = spawn
        self.weigh = weigh
        self.floor_s = floor_s
        self.held = 0  # instances registered so far
        self.results: dict[str, Any] = {
            "floor_s": floor_s,
            "propagation_s": [],
            "reads": [],
            "failure_s": [],
            "storms": [],
        }


async def compare(contenders: list[Contender], args: argparse.Namespace) -> None:
    """Each measure for every contender in turn, in `--rounds` rounds, the order reversed
    every other round (the machine is shared: a slow spell must not fall on one only)."""
    ids = [f"r{i}" for i in range(READ_INSTANCES)]
    for c in contenders:
        await asyncio.gather(*(c.system.register("reads", iid, PORT) for iid in ids))
        c.held += READ_INSTANCES
    per_round = max(1, args.propagations // args.rounds)
    kills = max(1, -(-args.trials // args.rounds))
    for r in range(args.rounds):
        order = contenders if r % 2 == 0 else contenders[::-1]
        print(f"-- round {r + 1} of {args.rounds}: {', '.join(c.name for c in order)}", flush=True)
        for c in order:
            prop = await propagation(c.system, per_round, str(r))
            c.results["propagation_s"] += prop
            c.held += per_round
            print(
                f"   {c.name}: propagation p50 {pct(prop, 0.5):.2f} ms p99 {pct(prop, 0.99):.2f} ms"
            )
        for c in order:
            got = await reads(c.system, args.read_s)
            c.results["reads"].append(got)
            print(f"   {c.name}: reads {got['rate']:,.0f}/s p99 {got['p99_ms']:.2f} ms", flush=True)
        for c in order:
            for k in range(kills):
                delay = await failure(c.system, c.spawn, c.floor_s, f"v{r}-{k}")
                c.results["failure_s"].append(delay)
                print(f"   {c.name}: SIGKILL -> gone {delay:.2f} s at {c.floor_s:g} s", flush=True)
        for c in order:
            st = await storm(c.system, args.storm, str(r))
            c.results["storms"].append(st)
            c.held += args.storm
            print(
                f"   {c.name}: storm of {args.storm:,}: {st['rate']:,.0f}/s acked in "
                f"{st['acked_s']:.2f} s, a watcher saw all after {st['watched_s']:.2f} s",
                flush=True,
            )
    for c in contenders:
        mem = await memory(c.system, c.weigh, c.held, max(args.memory, c.held + 1))
        c.results["memory"] = mem
        print(
            f"   {c.name}: {mem['b_per_instance']:,.0f} B an instance "
            f"({mem['from']:,} -> {mem['to']:,})"
        )


def spawner(command: Callable[[str], list[str]], env: dict[str, str]) -> Callable[[str], Any]:
    """Start the process owning instance `iid` (in service `fail-<iid>`), to kill it."""

    def spawn(iid: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603  # our own instance, to kill for real
            [sys.executable, *command(iid)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )

    return spawn


def peer_spawner(system: str, port: int, ttl_s: float) -> Callable[[str], Any]:
    script = str(ROOT / "tests/bench/peer_instance.py")
    return spawner(
        lambda iid: [
            script,
            system,
            "--port",
            str(port),
            "--ttl",
            str(ttl_s),
            "--service",
            f"fail-{iid}",
            "--id",
            iid,
        ],
        dict(os.environ),
    )


async def registries(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Baton, etcd and ZooKeeper, all up at once, each on servers of its own."""
    async with contextlib.AsyncExitStack() as stack:
        contenders = []
        if "Baton" in args.systems:
            server = stack.enter_context(processes(worker("registry"), worker("balancer")))
            nc = await nats.connect(server.url)
            stack.push_async_callback(nc.close)
            await wait_for_responder(nc, subjects.instances("reads"), Empty())
            baton = BatonSystem(nc)
            stack.push_async_callback(baton.close)
            backend = [str(ROOT / "tests/bench/slow_backend.py"), "--ttl", str(FLOOR_S["Baton"])]
            pids = [child("services.registry", server.url), server.proc.pid if server.proc else 0]
            spawn = spawner(
                lambda iid: [*backend, "--service", f"fail-{iid}", "--ids", iid],
                worker_env(server.url),
            )
            contenders.append(Contender(baton, spawn, resident(pids), FLOOR_S["Baton"]))
        if "etcd" in args.systems:
            etcd_server = stack.enter_context(peer_servers.etcd())
            etcd = EtcdSystem(etcd_server.port)
            stack.push_async_callback(etcd.close)
            FLOOR_S["etcd"] = float(await etcd.granted_ttl(1))
            spawn = peer_spawner("etcd", etcd_server.port, FLOOR_S["etcd"])
            contenders.append(Contender(etcd, spawn, resident([etcd_server.pid]), FLOOR_S["etcd"]))
        if "ZooKeeper" in args.systems:
            zk_server = stack.enter_context(peer_servers.zookeeper())
            zk = ZkSystem(zk_server.port)
            await zk.start()
            stack.push_async_callback(zk.close)
            ttl = FLOOR_S["ZooKeeper"]
            spawn = peer_spawner("zookeeper", zk_server.port, ttl)
            contenders.append(
                Contender(zk, spawn, partial(peer_servers.live_heap, zk_server.pid), ttl)
            )
        await compare(contenders, args)
        return {c.name: c.results for c in contenders}


def lines(
    results: dict[str, dict[str, Any]], bal: dict[str, Any], args: argparse.Namespace
) -> list[peer_table.Figure]:
    """The table's lines from what each system measured."""
    floors = ", ".join(f"{n} {FLOOR_S[n]:g} s" for n in results)
    storm, reads = f"{args.storm:,}", f"{READERS} clients, {READ_INSTANCES} instances"
    # (measure, unit, more is better, figure of one registry's results, note)
    measures: list[tuple[str, str, bool, Callable[[dict[str, Any]], float], str]] = [
        (f"storm: registrations/s, {storm} at once", "reg/s", True,
         lambda r: max(x["rate"] for x in r["storms"]), "best round"),
        (f"storm: until a watcher has seen all {storm}", "s", False,
         lambda r: min(x["watched_s"] for x in r["storms"]), "best round"),
        ("propagation p50, registration -> watcher", "ms", False,
         lambda r: pct(r["propagation_s"], 0.5), ""),
        ("propagation p99, registration -> watcher", "ms", False,
         lambda r: pct(r["propagation_s"], 0.99), ""),
        ("failure detection p50, SIGKILL -> watcher", "s", False,
         lambda r: pct(r["failure_s"], 0.5) / 1000, f"floors: {floors}"),
        ("failure detection max, SIGKILL -> watcher", "s", False,
         lambda r: pct(r["failure_s"], 1.0) / 1000, ""),
        (f"discovery reads/s, {reads}", "req/s", True,
         lambda r: max(x["rate"] for x in r["reads"]), "best round"),
        (f"discovery read p99, {reads}", "ms", False,
         lambda r: min(x["p99_ms"] for x in r["reads"]), "best round"),
        (f"server memory per instance, slope to {args.memory:,}", "B", False,
         lambda r: r["memory"]["b_per_instance"], ""),
    ]  # fmt: skip
    out = [
        peer_table.Figure(
            measure=measure,
            unit=unit,
            higher_is_better=higher,
            values={name: get(r) for name, r in results.items()},
            note=note,
        )
        for measure, unit, higher, get, note in measures
    ]
    slow = "one backend 20x slower a third of the time"
    strategies = "Baton least_response_time, Envoy LEAST_REQUEST"
    for key, measure, unit, higher, note in (
        ("p99_ms", f"balancing p99, {slow}", "ms", False, f"{strategies}; least lagged round"),
        ("success_pct", "balancing success", "%", True, ""),
    ):
        out.append(
            peer_table.Figure(
                measure=measure,
                unit=unit,
                higher_is_better=higher,
                values={name: s[key] for name, s in bal.items()},
                note=note,
            )
        )
    return out


async def main(args: argparse.Namespace) -> None:
    logs.configure("WARNING")
    results = await registries(args)
    bal = await balancing(args)
    table = lines(results, bal, args)
    print("\n".join(peer_table.markdown(table, SYSTEMS)))
    settings = {
        "storm": args.storm,
        "memory": args.memory,
        "propagations": args.propagations,
        "trials": args.trials,
        "rounds": args.rounds,
        "read_s": args.read_s,
        "readers": READERS,
        "rate": args.rate,
        "phase_s": args.phase_s,
        "floors_s": FLOOR_S,
        "systems": SYSTEMS,
    }
    emit(
        "peers",
        peer_table.rows(table),
        {
            "settings": settings,
            "lines": [msgspec.to_builtins(f) for f in table],
            "results": results,
            "balancing": bal,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter phases")
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--memory", type=int, default=100_000)
    parser.add_argument("--propagations", type=int, default=200)
    parser.add_argument("--trials", type=int, default=6, help="kills per system")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each measure")
    parser.add_argument("--read-s", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="balancing, requests/s")
    parser.add_argument("--phase-s", type=float, default=30.0, help="balancing, per system")
    parser.add_argument(
        "--systems",
        type=lambda s: [n for n in s.split(",") if n],
        default=["Baton", "etcd", "ZooKeeper"],
        help="registries to compare (an empty list: balancing only)",
    )
    ns = parser.parse_args()
    if ns.quick:
        ns.storm, ns.memory, ns.propagations = 2_000, 12_000, 40
        ns.trials, ns.read_s, ns.phase_s = 2, 1.5, 10.0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ns))
