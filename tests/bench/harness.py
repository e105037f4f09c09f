"""What the benchmarks share: a nats-server with workers as their own processes, polling
until a responder answers, percentiles, and the rows every benchmark reports.

Each benchmark script runs on its own and prints its own detail; it also hands its
summary rows (and any raw data worth plotting) to `emit`, which writes them as JSON
where `tests/bench/run.py` asked (BATON_BENCH_OUT), so `just bench` prints one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats
from natsserver import NatsServer

from schemas import subjects
from schemas.registry import Instance, InstanceList

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from nats.aio.client import Client

ROOT = Path(__file__).resolve().parents[2]
# Where the benchmarks import from: the repository, and the tests' helpers (natsserver,
# waiting, builders) as top-level modules, as pytest's `pythonpath` has them. `just bench`
# sets it; a script run by hand needs it too: PYTHONPATH=.:tests:tests/unit:tests/bench
BENCH_PYTHONPATH = os.pathsep.join(
    str(ROOT / folder) for folder in (".", "tests", "tests/unit", "tests/bench")
)


class Row(msgspec.Struct, kw_only=True):
    """One line of the summary table: Baton's figure against a baseline from the same run."""

    area: str  # e.g. "resolve"
    measure: str  # what was measured, e.g. "req/s, 64 clients"
    baseline: str  # what it is compared with, e.g. "bare nats-py responder"
    value: float  # Baton's figure
    base: float  # the baseline's figure, measured in the same run
    unit: str  # of value and base, e.g. "req/s", "ms", "B"
    ratio: float  # value / base, or the comparison the target is stated in
    target: str = ""  # e.g. ">= 0.8x"; empty when there is none
    met: bool | None = None  # None when there is no target


class Report(msgspec.Struct, kw_only=True):
    """What one benchmark script hands to the runner."""

    bench: str
    rows: list[Row]
    data: dict[str, Any] = msgspec.field(default_factory=dict)  # raw figures for plots


def figure(value: float) -> str:
    """A figure as people read it: 35,071 and 0.428, not 3.507e+04 and 0.42799."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def emit(bench: str, rows: list[Row], data: dict[str, Any] | None = None) -> None:
    """Print the rows; write them as JSON to $BATON_BENCH_OUT when the runner set it."""
    for row in rows:
        verdict = "" if row.met is None else (" met" if row.met else " MISSED")
        print(
            f"  {row.area}: {row.measure}: {figure(row.value)} {row.unit} vs "
            f"{figure(row.base)} ({row.baseline}) = {row.ratio:.2f}x {row.target}{verdict}"
        )
    out = os.environ.get("BATON_BENCH_OUT")
    if out:
        report = Report(bench=bench, rows=rows, data=data or {})
        Path(out).write_bytes(msgspec.json.encode(report))


def worker(name: str) -> tuple[str, list[str]]:
    """A Baton worker, as `python -m services.<name>`."""
    return name, ["-m", f"services.{name}"]


def worker_env(nats_url: str) -> dict[str, str]:
    """What a bench's process runs with: this NATS_URL, warnings only, the repo importable."""
    return {**os.environ, "NATS_URL": nats_url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def running(
    commands: Iterable[tuple[Path, list[str], dict[str, str]]],
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One python process per (log file, args, env), all stopped on exit: SIGTERM, then
    SIGKILL for any still up after 10 s (one stuck process must not leave the rest)."""
    with contextlib.ExitStack() as logs:
        procs = []
        for log_path, args, env in commands:
            log = logs.enter_context(log_path.open("ab"))
            procs.append(
                subprocess.Popen(  # noqa: S603  # our own workers
                    [sys.executable, *args], env=env, stdout=log, stderr=log, cwd=ROOT
                )
            )
        try:
            yield procs
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@contextlib.contextmanager
def processes(*commands: tuple[str, list[str]]) -> Iterator[NatsServer]:
    """A fresh nats-server and one process per (name, python args), all stopped on exit."""
    work = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    server = NatsServer(work / "nats").start()
    env = worker_env(server.url)
    try:
        with running((work / f"{name}.log", args, env) for name, args in commands):
            yield server
    finally:
        server.stop()


async def wait_for_responder(nc: Client, subject: str, msg: msgspec.Struct) -> None:
    """Send `msg` until something answers (a worker still starting gives no responders)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            await nc.request(subject, msgspec.json.encode(msg), timeout=1)
        except nats.errors.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            return


async def wait_for_instances(nc: Client, service: str, count: int) -> list[Instance]:
    """Poll the registry until `service` lists `count` instances; return them."""
    async with asyncio.timeout(30):
        while True:
            reply = await nc.request(subjects.instances(service), b"{}", timeout=1)
            with contextlib.suppress(msgspec.ValidationError):  # 404 before any registers
                fleet = msgspec.json.decode(reply.data, type=InstanceList).instances
                if len(fleet) == count:
                    return fleet
            await asyncio.sleep(0.1)


def pct(values: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
