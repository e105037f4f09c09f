"""Side by side with the systems people use instead: Baton, etcd, ZooKeeper and Envoy, on
the same machine, in the same run, doing the same work (peer_systems.py says how each
is used). One system runs at a time, on servers of its own started for it.

1. Registration storm: `--storm` instances registered at once (1,000 in flight): rate
   of acknowledged registrations, and time until a watcher has seen every one.
2. Propagation: one registration to a watcher knowing it, `--propagations` times.
3. Failure detection: the process owning an instance is SIGKILLed at a random phase of
   its keep-alive; time until a watcher learns it is gone. Each system at its floor:
   Baton ttl_s=1 (the contract's minimum), etcd lease TTL 1 s (the least etcd grants
   with its default 100 ms heartbeat and 1 s election timeout: 1.5 elections, rounded
   up to a second), ZooKeeper session timeout 4 s (2 x tickTime, the server's
   minSessionTimeout, with Debian's and ZooKeeper's default tickTime of 2000 ms).
4. Discovery reads: 64 concurrent clients asking for an endpoint of a 100-instance
   service (Baton: the SDK's resolve; etcd: a range read of the prefix and a pick;
   ZooKeeper: the children and a pick): requests/s and p99.
5. Memory: server-side bytes per registered instance, the slope of resident memory
   from the count after the storm to `--memory` instances (services of 100 each).
   Baton: the registry's RSS plus nats-server's; etcd: etcd's; ZooKeeper: the JVM's.
6. Balancing: bench_slow_e2e.py's fleet (six aiohttp backends, one 20x slower for the
   middle third), an open loop through Baton's SDK with least_response_time and through
   Envoy's LEAST_REQUEST (Envoy's defaults; the route's timeout is the clients').

    python tests/bench/bench_peers.py [--quick] [--storm 10000] [--memory 100000]
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

import aiohttp
import nats
import peer_servers
import peer_table
from bench_scale import child, rss
from bench_slow_e2e import (
    MEDIAN_MS,
    SLOW,
    SLOW_FACTOR,
    TIMEOUT_S,
    Outcome,
    backends,
    request,
    summary,
    wait_for_fleet,
)
from harness import ROOT, emit, pct, processes, wait_for_responder, worker, worker_env
from peer_systems import BatonSystem, EtcdSystem, System, ZkSystem, in_window

from schemas import subjects
from schemas.registry import Empty
from services import logs
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

SYSTEMS = ["Baton", "etcd", "ZooKeeper", "Envoy"]
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


async def propagation(system: System, n: int) -> list[float]:
    seen = Seen()
    await system.watch("prop", seen.on_change)
    delays = []
    for i in range(n):
        t0 = time.monotonic()
        await system.register("prop", f"p{i}", PORT)
        delays.append(await seen.wait(f"p{i}", present=True, timeout=30) - t0)
    return delays


async def reads(system: System, seconds: float) -> tuple[float, list[float]]:
    ids = [f"r{i}" for i in range(READ_INSTANCES)]
    await in_window(ids, READ_INSTANCES, lambda iid: system.register("reads", iid, PORT))
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
    return len(latencies) / (time.perf_counter() - t0), latencies


async def failure(
    system: System, spawn: Callable[[str], subprocess.Popen[bytes]], floor_s: float, trials: int
) -> list[float]:
    seen = Seen()
    await system.watch("fail", seen.on_change)
    delays = []
    for k in range(trials):
        iid = f"victim{k}"
        victim = spawn(iid)
        try:
            await seen.wait(iid, present=True, timeout=60)
            # killed at a random phase of its keep-alive, after a few of them
            await asyncio.sleep(floor_s * random.uniform(0.7, 1.2))
            killed = time.monotonic()
            victim.kill()  # SIGKILL: nothing said on the way out
            delays.append(await seen.wait(iid, present=False, timeout=5 * floor_s + 20) - killed)
        finally:
            victim.kill()
            victim.wait()
    return delays


async def storm(system: System, n: int) -> dict[str, float]:
    seen = Seen()
    seen.count_wanted = n
    await system.watch("storm", seen.on_change)
    ids = [f"s{i:06}" for i in range(n)]
    t0 = time.monotonic()
    await in_window(ids, WINDOW, lambda iid: system.register("storm", iid, PORT))
    acked = time.monotonic() - t0
    await asyncio.wait_for(seen.all_seen.wait(), 300)
    return {"rate": n / acked, "acked_s": acked, "watched_s": max(seen.added.values()) - t0}


def service_of(iid: str) -> str:
    """The memory fleet's service of an instance `m<n>`: a service every 100."""
    return f"m{int(iid[1:]) // 100}"


async def memory(system: System, pids: list[int], held: int, upto: int) -> dict[str, float]:
    """RSS slope over the instances registered from `held` to `upto`, in services of 100."""
    await asyncio.sleep(1)  # let the storm's buffers go before the first reading
    before = sum(rss(p) for p in pids)
    ids = [f"m{i}" for i in range(upto - held)]
    await in_window(ids, WINDOW, lambda iid: system.register(service_of(iid), iid, PORT))
    await asyncio.sleep(1)
    after = sum(rss(p) for p in pids)
    return {
        "from": held,
        "to": upto,
        "rss_before": before,
        "rss_after": after,
        "b_per_instance": (after - before) / (upto - held),
    }


async def exercise(
    system: System,
    args: argparse.Namespace,
    spawn: Callable[[str], subprocess.Popen[bytes]],
    pids: Callable[[], list[int]],
) -> dict[str, Any]:
    floor_s = FLOOR_S[system.name]
    print(f"-- {system.name}", flush=True)
    prop = await propagation(system, args.propagations)
    print(f"   propagation p50 {pct(prop, 0.5):.2f} ms p99 {pct(prop, 0.99):.2f} ms", flush=True)
    rate, lat = await reads(system, args.read_s)
    print(f"   reads {rate:,.0f}/s p99 {pct(lat, 0.99):.2f} ms", flush=True)
    fails = await failure(system, spawn, floor_s, args.trials)
    print(f"   failure detection at {floor_s:g} s: {[round(d, 2) for d in fails]}", flush=True)
    st = await storm(system, args.storm)
    print(
        f"   storm {args.storm}: {st['rate']:,.0f}/s acked in {st['acked_s']:.2f} s, "
        f"watcher saw all after {st['watched_s']:.2f} s",
        flush=True,
    )
    held = args.propagations + READ_INSTANCES + args.storm
    mem = await memory(system, pids(), held, args.memory)
    print(f"   memory {mem['b_per_instance']:,.0f} B/instance ({held:,} -> {args.memory:,})")
    await system.close()
    return {
        "propagation_s": prop,
        "reads_per_s": rate,
        "reads_p99_ms": pct(lat, 0.99),
        "failure_s": fails,
        "floor_s": floor_s,
        "storm": st,
        "memory": mem,
    }


def spawner(args: list[str], env: dict[str, str] | None = None) -> Callable[[str], Any]:
    def spawn(iid: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603  # our own instance, to kill for real
            [sys.executable, *args, iid],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )

    return spawn


async def baton(args: argparse.Namespace) -> dict[str, Any]:
    with processes(worker("registry"), worker("balancer")) as server:
        nc = await nats.connect(server.url)
        await wait_for_responder(nc, subjects.instances("prop"), Empty())
        backend = str(ROOT / "tests/bench/slow_backend.py")
        spawn = spawner(
            [backend, "--service", "fail", "--ttl", str(FLOOR_S["Baton"]), "--ids"],
            worker_env(server.url),
        )
        nats_pid = server.proc.pid if server.proc else 0
        registry = child("services.registry", server.url)
        try:
            return await exercise(BatonSystem(nc), args, spawn, lambda: [registry, nats_pid])
        finally:
            await nc.close()


def peer_spawner(system: str, port: int) -> Callable[[str], Any]:
    script = str(ROOT / "tests/bench/peer_instance.py")
    ttl = str(FLOOR_S["ZooKeeper" if system == "zookeeper" else "etcd"])
    return spawner([script, system, "--port", str(port), "--service", "fail", "--ttl", ttl, "--id"])


async def etcd(args: argparse.Namespace) -> dict[str, Any]:
    with peer_servers.etcd() as server:
        system = EtcdSystem(server.port)
        return await exercise(system, args, peer_spawner("etcd", server.port), lambda: [server.pid])


async def zookeeper(args: argparse.Namespace) -> dict[str, Any]:
    with peer_servers.zookeeper() as server:
        system = ZkSystem(server.port)
        await system.start()
        for service in ("prop", "reads", "fail", "storm"):
            await system.ensure(service)
        for k in range(args.memory // 100 + 1):
            await system.ensure(f"m{k}")
        spawn = peer_spawner("zookeeper", server.port)
        return await exercise(system, args, spawn, lambda: [server.pid])


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
    with processes(worker("registry"), worker("balancer"), *backends()) as server:
        nc = await nats.connect(server.url)
        fleet = await wait_for_fleet(nc)
        slow = next(i for i in fleet if i.instance_id == SLOW)
        slow_url = f"http://{slow.host}:{slow.port}/admin/slow"
        client = BalancerClient(nc)
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

                def sdk(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
                    return request(client, http, "least_response_time", due, start)

                outcomes = await open_phase(http, slow_url, sdk, args.rate, args.phase_s)
                out["Baton"] = summary(outcomes)
                hosts = [(i.host, i.port) for i in fleet]
                with peer_servers.envoy(hosts, TIMEOUT_S * 1000) as proxy:
                    url = f"http://127.0.0.1:{proxy.port}/"
                    await ready(http, url)

                    def envoy(due: float, start: float) -> Coroutine[Any, Any, Outcome]:
                        return via_envoy(http, url, due, start)

                    outcomes = await open_phase(http, slow_url, envoy, args.rate, args.phase_s)
                    out["Envoy"] = summary(outcomes)
        finally:
            await client.aclose()
            await nc.close()
    for name, s in out.items():
        print(f"-- balancing, {name}: p99 {s['p99_ms']:.1f} ms, success {s['success_pct']:.2f} %")
    return out


async def ready(http: aiohttp.ClientSession, url: str) -> None:
    """Envoy answers 200 through its cluster (its listener can be up before the cluster)."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


def lines(
    results: dict[str, dict[str, Any]], bal: dict[str, Any], args: argparse.Namespace
) -> list[peer_table.Figure]:
    """The table's lines from what each system measured."""
    registries = ("Baton", "etcd", "ZooKeeper")
    Figure = peer_table.Figure  # noqa: N806

    def each(get: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return {name: get(results[name]) for name in registries if name in results}

    floors = ", ".join(f"{n} {FLOOR_S[n]:g} s" for n in registries)
    return [
        Figure(
            measure=f"storm: registrations/s, {args.storm:,} at once",
            unit="reg/s",
            higher_is_better=True,
            values=each(lambda r: r["storm"]["rate"]),
        ),
        Figure(
            measure=f"storm: until a watcher has seen all {args.storm:,}",
            unit="s",
            higher_is_better=False,
            values=each(lambda r: r["storm"]["watched_s"]),
        ),
        Figure(
            measure="propagation p50, registration -> watcher",
            unit="ms",
            higher_is_better=False,
            values=each(lambda r: pct(r["propagation_s"], 0.5)),
        ),
        Figure(
            measure="propagation p99, registration -> watcher",
            unit="ms",
            higher_is_better=False,
            values=each(lambda r: pct(r["propagation_s"], 0.99)),
        ),
        Figure(
            measure="failure detection p50, SIGKILL -> watcher",
            unit="s",
            higher_is_better=False,
            values=each(lambda r: pct(r["failure_s"], 0.5) / 1000),
            note=f"floors: {floors}",
        ),
        Figure(
            measure="failure detection max, SIGKILL -> watcher",
            unit="s",
            higher_is_better=False,
            values=each(lambda r: pct(r["failure_s"], 1.0) / 1000),
        ),
        Figure(
            measure=f"discovery reads/s, {READERS} clients, {READ_INSTANCES} instances",
            unit="req/s",
            higher_is_better=True,
            values=each(lambda r: r["reads_per_s"]),
        ),
        Figure(
            measure=f"discovery read p99, {READERS} clients",
            unit="ms",
            higher_is_better=False,
            values=each(lambda r: r["reads_p99_ms"]),
        ),
        Figure(
            measure=f"server memory per instance, slope to {args.memory:,}",
            unit="B",
            higher_is_better=False,
            values=each(lambda r: r["memory"]["b_per_instance"]),
        ),
        Figure(
            measure="balancing p99, one backend 20x slower a third of the time",
            unit="ms",
            higher_is_better=False,
            values={n: s["p99_ms"] for n, s in bal.items()},
            note="Baton least_response_time, Envoy LEAST_REQUEST",
        ),
        Figure(
            measure="balancing success",
            unit="%",
            higher_is_better=True,
            values={n: s["success_pct"] for n, s in bal.items()},
        ),
    ]


async def main(args: argparse.Namespace) -> None:
    logs.configure("WARNING")
    results: dict[str, dict[str, Any]] = {}
    runs = {"Baton": baton, "etcd": etcd, "ZooKeeper": zookeeper}
    for name in args.systems:
        results[name] = await runs[name](args)
    bal = await balancing(args)
    table = lines(results, bal, args)
    print("\n".join(peer_table.markdown(table, SYSTEMS)))
    settings = {
        "storm": args.storm,
        "memory": args.memory,
        "propagations": args.propagations,
        "trials": args.trials,
        "read_s": args.read_s,
        "readers": READERS,
        "rate": args.rate,
        "phase_s": args.phase_s,
        "median_ms": MEDIAN_MS,
        "floors_s": FLOOR_S,
        "systems": SYSTEMS,
    }
    emit(
        "peers",
        peer_table.rows(table),
        {
            "settings": settings,
            "lines": [msgspec_lines(f) for f in table],
            "results": results,
            "balancing": bal,
        },
    )


def msgspec_lines(line: peer_table.Figure) -> dict[str, Any]:
    import msgspec  # noqa: PLC0415

    return dict(msgspec.to_builtins(line))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter phases")
    parser.add_argument("--storm", type=int, default=10_000)
    parser.add_argument("--memory", type=int, default=100_000)
    parser.add_argument("--propagations", type=int, default=200)
    parser.add_argument("--trials", type=int, default=5, help="kills per system")
    parser.add_argument("--read-s", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="balancing, requests/s")
    parser.add_argument("--phase-s", type=float, default=30.0, help="balancing, per system")
    parser.add_argument(
        "--systems", type=lambda s: s.split(","), default=["Baton", "etcd", "ZooKeeper"]
    )
    ns = parser.parse_args()
    if ns.quick:
        ns.storm, ns.memory, ns.propagations = 3_000, 13_000, 50
        ns.trials, ns.read_s, ns.phase_s = 2, 2.0, 12.0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(ns))
