"""The prober: throughput, schedule lateness, detection, and a replica SIGKILLed.

Every worker, the target (tests/bench/check_target.py) and the baseline loop run as their
own processes on one nats-server.

- throughput: HTTP checks per second one prober process completes, against a bare
  aiohttp client loop (its own process, 64 requests in flight, a new connection per
  request as the prober's keep-alive-off probes) hitting the same target.
- lateness: 10,000 HTTP checks (2,000 with --quick) at a 10 s interval on one prober:
  how late each run starts against its slot (p50/p99), the prober's and the registry's
  CPU and memory; the registry's against a baseline run in which every result reaches it
  (PROBER_REFRESH_S tiny: what the registry decoded before it heard transitions only).
- detection: a target turning 503 -> the first resolve without the instance, p50/p99,
  against the bound interval + timeout + 1 s.
- replicas: three probers share 300 checks at 1 s; one is SIGKILLed: the longest gap
  between two runs of any check (at most two intervals: one slot skipped), and slots
  run twice while the replicas agree.

    PYTHONPATH=.:tests:tests/unit:tests/bench python tests/bench/bench_prober.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import msgspec
import nats
from harness import BENCH_PYTHONPATH, ROOT, Row, emit, pct, running, worker_env
from natsserver import NatsServer

from schemas import subjects
from schemas.balancer import ResolveRequest
from schemas.checks import CheckDefinition, CheckResult
from schemas.registry import Registration
from services.prober.schedule import next_slot
from services.prober.worker import check_key

if TYPE_CHECKING:
    from collections.abc import Iterator
    from subprocess import Popen

    from nats.aio.client import Client

HERE = Path(__file__).resolve().parent
CONCURRENCY = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def stack(
    workers: list[str], *, probers: int = 1, prober_env: dict[str, str] | None = None
) -> Iterator[tuple[NatsServer, int, list[Popen[bytes]], list[Popen[bytes]]]]:
    """nats-server, the target, the workers named, and `probers` prober processes; yields
    the server, the target's port, the probers and the workers."""
    work = Path(tempfile.mkdtemp(prefix="baton-bench-prober-"))
    server = NatsServer(work / "nats").start()
    env = worker_env(server.url)
    port = free_port()
    commands = [(work / "target.log", [str(HERE / "check_target.py"), str(port)], env)]
    commands += [(work / f"{w}.log", ["-m", f"services.{w}"], env) for w in workers]
    penv = {**env, **(prober_env or {})}
    commands += [(work / f"prober{n}.log", ["-m", "services.prober"], penv) for n in range(probers)]
    try:
        with running(commands) as procs:
            _wait_http(f"http://127.0.0.1:{port}/h/ready")
            yield server, port, procs[1 + len(workers) :], procs[1 : 1 + len(workers)]
    finally:
        server.stop()


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310  # our own target
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _http_check(port: int, name: str, interval: float, timeout: float) -> CheckDefinition:
    return CheckDefinition(
        check_id="http",
        kind="http",
        target=f"http://127.0.0.1:{port}/h/{name}",
        interval_s=interval,
        timeout_s=timeout,
    )


async def register(
    nc: Client, service: str, count: int, port: int, interval: float, timeout: float
) -> None:
    """`count` instances, each with one HTTP check; 64 registrations in flight."""
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        reg = Registration(
            instance_id=f"i{i}",
            host="127.0.0.1",
            port=port,
            checks=[_http_check(port, f"i{i}", interval, timeout)],
        )
        async with gate:
            for _ in range(50):  # the registry may still be starting
                try:
                    await nc.request(subjects.register(service), msgspec.json.encode(reg), 5)
                except nats.errors.Error:
                    await asyncio.sleep(0.1)
                else:
                    return
            raise RuntimeError(f"the registry never acknowledged {reg.instance_id}")

    await asyncio.gather(*(one(i) for i in range(count)))  # each acknowledged: all held


class Results:
    def __init__(self) -> None:
        self.seen: list[tuple[str, CheckResult]] = []
        self._decode = msgspec.json.Decoder(CheckResult).decode

    async def on_msg(self, msg: Any) -> None:
        service = msg.subject.rsplit(".", 1)[-1]
        self.seen.append((service, self._decode(msg.data)))

    def count(self) -> int:
        return len(self.seen)


async def follow(nc: Client) -> Results:
    results = Results()
    await nc.subscribe(subjects.every(subjects.PROBER_RESULTS), cb=results.on_msg)
    await nc.flush()
    return results


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- throughput ---------------------------------------------------------------------------
async def bare_loop(url: str, seconds: float) -> None:
    """The baseline, run as its own process: print how many requests completed."""
    done = 0
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                async with session.get(url) as reply:
                    await reply.content.read(4096)
                    done += reply.status == 200

        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    print(done / seconds)


async def throughput(args: argparse.Namespace) -> tuple[float, float]:
    # as many checks in flight as the bare loop has requests: the same work, side by side
    env = {"PROBER_CONCURRENCY": str(CONCURRENCY)}
    with stack(["registry"], prober_env=env) as (server, port, _probers, _workers):
        url = f"http://127.0.0.1:{port}/h/bare"
        proc = await asyncio.create_subprocess_exec(  # this script, as the baseline's process
            sys.executable,
            __file__,
            "--bare",
            url,
            str(args.window),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**worker_env(server.url), "PYTHONPATH": BENCH_PYTHONPATH},
        )
        out, _ = await proc.communicate()
        bare = float(out.decode().strip().splitlines()[-1])
        nc = await nats.connect(server.url)
        results = await follow(nc)
        # more offered than one process can run: the prober runs flat out
        await register(nc, "load", args.load_checks, port, interval=1.0, timeout=1.0)
        await asyncio.sleep(2)  # past the first slots' burst
        before = len([1 for _, r in results.seen if r.status == "passing"])
        await asyncio.sleep(args.window)
        after = len([1 for _, r in results.seen if r.status == "passing"])
        await nc.close()
    return (after - before) / args.window, bare


# -- lateness ----------------------------------------------------------------------------
class Usage(NamedTuple):
    cpu: float  # of one core
    rss: float  # MiB


async def lateness(
    args: argparse.Namespace, *, refresh_s: float = 60.0
) -> tuple[list[float], Usage, Usage, int]:
    """The runs' lateness, the prober's and the registry's usage."""
    env = {
        "PROBER_REGISTRY_TIMEOUT_S": "10",  # pages of a big fleet on a busy machine
        "PROBER_REFRESH_S": str(refresh_s),
    }
    with stack(["registry"], prober_env=env) as (server, port, probers, workers):
        nc = await nats.connect(server.url)
        results = await follow(nc)
        await register(nc, "late", args.late_checks, port, interval=10.0, timeout=2.0)
        pid, registry = probers[0].pid, workers[0].pid
        async with asyncio.timeout(120):  # every check has had its first run
            while len({r.instance_id for _, r in results.seen}) < args.late_checks:  # noqa: ASYNC110  # another process
                await asyncio.sleep(0.5)
        await asyncio.sleep(10.0)  # and one more interval: the first runs' burst is over
        mark, cpu0, reg0, t0 = results.count(), cpu_s(pid), cpu_s(registry), time.monotonic()
        await asyncio.sleep(10.0 * args.late_intervals)
        took = time.monotonic() - t0
        prober = Usage((cpu_s(pid) - cpu0) / took, rss_mib(pid))
        held = Usage((cpu_s(registry) - reg0) / took, rss_mib(registry))
        late = []
        for service, r in results.seen[mark:]:
            start = r.at.timestamp() - r.duration_ms / 1000
            key = check_key(service, r.instance_id, r.check_id)
            slot = next_slot(key, 10.0, start - 10.0)  # the slot at or before the start
            late.append(start - slot)
        runs = len(results.seen) - mark
        await nc.close()
    return late, prober, held, runs


async def late_rows(args: argparse.Namespace, rows: list[Row]) -> list[float]:
    """Lateness with every result reaching the registry (the baseline), then as shipped."""
    _, _, every_run, _ = await lateness(args, refresh_s=0.001)
    late, prober, held, runs = await lateness(args)
    p50, p99 = pct(late, 0.5), pct(late, 0.99)
    print(
        f"lateness: {args.late_checks} checks at 10 s, {runs} runs: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms; prober CPU {prober.cpu:.0%} of a core, RSS {prober.rss:.0f} MiB; "
        f"registry CPU {held.cpu:.0%}, RSS {held.rss:.0f} MiB (every result sent to it: "
        f"CPU {every_run.cpu:.0%}, RSS {every_run.rss:.0f} MiB)"
    )
    rows.append(
        Row(
            area="prober",
            measure=f"start lateness p99, {args.late_checks} checks at 10 s "
            f"(CPU {prober.cpu:.0%} of a core, RSS {prober.rss:.0f} MiB)",
            baseline="the target",
            value=p99,
            base=100.0,
            unit="ms",
            ratio=p99 / 100.0,
            target="<= 100 ms",
            met=p99 <= 100.0,
        )
    )
    rows.append(
        Row(
            area="prober",
            measure=f"registry CPU, {args.late_checks} checks at 10 s, transitions and "
            f"refreshes only (RSS {held.rss:.0f} MiB)",
            baseline=f"every result sent to the registry (RSS {every_run.rss:.0f} MiB)",
            value=held.cpu * 100,
            base=every_run.cpu * 100,
            unit="% of a core",
            ratio=held.cpu / every_run.cpu if every_run.cpu else 0.0,
            target="< 1x",
            met=held.cpu < every_run.cpu,
        )
    )
    return late


# -- detection ---------------------------------------------------------------------------
async def detection(args: argparse.Namespace) -> list[float]:
    interval, timeout = 1.0, 1.0
    with stack(["registry", "balancer"]) as (server, port, _probers, _workers):
        nc = await nats.connect(server.url)
        await register(nc, "det", args.flips, port, interval=interval, timeout=timeout)
        ids = [f"i{i}" for i in range(args.flips)]
        delays = []
        for iid in ids:
            others = msgspec.json.encode(ResolveRequest(exclude=[i for i in ids if i != iid]))
            while not await _resolves(nc, others):  # noqa: ASYNC110  # another process's state
                await asyncio.sleep(0.02)  # passing first (checks start critical)
            _put(f"http://127.0.0.1:{port}/set/{iid}/503")
            flipped = time.perf_counter()
            while await _resolves(nc, others):  # noqa: ASYNC110  # another process's state
                await asyncio.sleep(0.005)
            delays.append(time.perf_counter() - flipped)
        await nc.close()
    return delays


async def _resolves(nc: Client, request: bytes) -> bool:
    reply = await nc.request(subjects.resolve("det"), request, timeout=2)
    return not (reply.headers or {}).get("Nats-Service-Error-Code")


def _put(url: str) -> None:
    req = urllib.request.Request(url, method="PUT")  # noqa: S310  # our own target
    with urllib.request.urlopen(req, timeout=2):  # noqa: S310
        pass


# -- a replica SIGKILLed -------------------------------------------------------------------
async def replicas(args: argparse.Namespace) -> tuple[float, int, int, float]:
    interval, heartbeat = 1.0, 0.2
    env = {"PROBER_HEARTBEAT_S": str(heartbeat)}
    with stack(["registry"], probers=3, prober_env=env) as (server, port, probers, _workers):
        nc = await nats.connect(server.url)
        results = await follow(nc)
        await asyncio.sleep(1.0)  # the three hear one another
        await register(nc, "rep", args.shared_checks, port, interval=interval, timeout=0.5)
        await asyncio.sleep(4 * interval)
        start = results.count()
        victim = probers[0]
        await asyncio.sleep(2.5 * interval)
        victim.send_signal(signal.SIGKILL)
        await asyncio.sleep(6 * interval)
        seen = results.seen[start:]
        await nc.close()
    runs: dict[str, list[float]] = {}
    slots: dict[tuple[str, int], int] = {}
    for service, r in seen:
        key = check_key(service, r.instance_id, r.check_id)
        began = r.at.timestamp() - r.duration_ms / 1000
        runs.setdefault(key, []).append(began)
        slot = round(next_slot(key, interval, began - interval) / interval)
        slots[(key, slot)] = slots.get((key, slot), 0) + 1
    gaps = [b - a for times in runs.values() for a, b in itertools.pairwise(times)]
    twice = sum(n > 1 for n in slots.values())
    return max(gaps), twice, len(runs), 3 * heartbeat


async def main(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    if args.only == "lateness":
        late = await late_rows(args, rows)
        emit("prober", rows, {"lateness_ms": sorted(x * 1000 for x in late)})
        return
    rate, bare = await throughput(args)
    print(f"throughput: prober {rate:,.0f} checks/s, bare aiohttp loop {bare:,.0f} req/s")
    rows.append(
        Row(
            area="prober",
            measure="HTTP checks per second, one process",
            baseline=f"bare aiohttp loop, {CONCURRENCY} in flight",
            value=rate,
            base=bare,
            unit="/s",
            ratio=rate / bare,
            target=">= 0.7x",
            met=rate / bare >= 0.7,
        )
    )
    late = await late_rows(args, rows)
    delays = await detection(args)
    d50, d99, bound = pct(delays, 0.5), pct(delays, 0.99), 3000.0
    print(f"detection: 503 -> out of resolve p50 {d50:.0f} ms, p99 {d99:.0f} ms (bound 3 s)")
    for q, value in (("p50", d50), ("p99", d99)):
        rows.append(
            Row(
                area="prober",
                measure=f"503 -> first resolve without it, {q} (interval 1 s, timeout 1 s)",
                baseline="interval + timeout + 1 s",
                value=value,
                base=bound,
                unit="ms",
                ratio=value / bound,
                target="<= 1x",
                met=value <= bound,
            )
        )
    gap, twice, checks, detect = await replicas(args)
    print(
        f"replicas: 3 probers, {checks} checks at 1 s, one SIGKILLed: longest gap "
        f"{gap:.2f} s (detection {detect:.1f} s), slots run twice: {twice}"
    )
    rows.append(
        Row(
            area="prober",
            measure="3 replicas, one SIGKILLed: longest gap between runs of a check",
            baseline="two intervals (one slot skipped)",
            value=gap,
            base=2.0,
            unit="s",
            ratio=gap / 2.0,
            target="<= 1x",
            met=gap <= 2.0 + 0.1,  # 0.1 s: a run's own start jitter
        )
    )
    emit(
        "prober",
        rows,
        {
            "lateness_ms": sorted(x * 1000 for x in late),
            "detection_ms": sorted(d * 1000 for d in delays),
            "slots_run_twice": twice,
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bare"]:
        asyncio.run(bare_loop(sys.argv[2], float(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller and shorter")
    parser.add_argument("--only", choices=["lateness"], help="run only this part")
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--load-checks", type=int, default=4000)
    parser.add_argument("--late-checks", type=int, default=10_000)
    parser.add_argument("--late-intervals", type=int, default=2)
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--shared-checks", type=int, default=300)
    args = parser.parse_args()
    if args.quick:
        args.window, args.load_checks, args.late_intervals, args.flips = 5.0, 2000, 1, 8
        args.late_checks = 2000
    asyncio.run(main(args))
