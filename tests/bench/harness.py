"""What the benchmarks share: a nats-server with workers as their own processes, polling
until a responder answers, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from natsserver import NatsServer

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


def worker(name: str) -> tuple[str, list[str]]:
    """A Baton worker, as `python -m services.<name>`."""
    return name, ["-m", f"services.{name}"]


@contextlib.contextmanager
def processes(*commands: tuple[str, list[str]]) -> Iterator[NatsServer]:
    """A fresh nats-server and one process per (name, python args), all stopped on exit."""
    work = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    server = NatsServer(work / "nats").start()
    env = {**os.environ, "NATS_URL": server.url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    with contextlib.ExitStack() as logs:
        procs = []
        for name, args in commands:
            log = logs.enter_context((work / f"{name}.log").open("wb"))
            procs.append(
                subprocess.Popen(  # noqa: S603  # our own workers
                    [sys.executable, *args], env=env, stdout=log, stderr=log, cwd=ROOT
                )
            )
        try:
            yield server
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
            server.stop()


async def wait_for_responder(nc: nats.NATS, subject: str, msg: msgspec.Struct) -> None:
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


def pct(values: list[float], q: float) -> float:
    """The q-quantile of durations in seconds, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
