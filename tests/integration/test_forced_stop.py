"""A second SIGTERM forces the exit, as uvicorn's does: for a worker whose drain is stuck
on a handler, and for the stack's supervisor whose child ignores its SIGTERM.

Each runs as a real process here (a small driver on Baton's own runner or supervisor);
the first SIGTERM starts the orderly stop, the test awaits the line that says the stop
is under way (and stuck), then sends the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from subprocesses import reaped
from waiting import until

if TYPE_CHECKING:
    from asyncio.subprocess import Process
    from collections.abc import AsyncIterator, Callable

    from nats.aio.client import Client
    from natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
EXIT_S = 30.0  # a bound on the test, not a figure: unforced, either stop takes 600 s

# A worker with one handler that never returns; its drain would wait NATS_DRAIN_TIMEOUT_S.
STUCK_WORKER = """
import asyncio
from contextlib import asynccontextmanager

import msgspec

from services import runner


class Probe(msgspec.Struct):
    pass


class StuckSettings(msgspec.Struct, frozen=True, kw_only=True):
    pass


@asynccontextmanager
async def stuck(bus, settings, log):
    forever = asyncio.Event()

    async def handler(subject, probe):
        log.info("probe.taken")
        await forever.wait()

    await bus.serve("test.stuck", Probe, handler)
    yield None


runner.main("stuck", stuck, StuckSettings, "STUCK")
"""

# A child that ignores SIGTERM, under the stack's supervisor with a 600 s stop timeout.
STUBBORN_CHILD = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
SUPERVISOR = """
import os
import sys
from pathlib import Path

from services.stack.supervisor import Supervisor

sup = Supervisor(Path(sys.argv[1]), stop_timeout_s=600)
sup.install_signal_handlers()
try:
    child = sup.start("stubborn", [sys.executable, "-c", sys.argv[2]], env=os.environ)
    sup.wait_for(child, "ready", 30)
    sup.say(f"up; stubborn is pid {child.pid}")
    sys.exit(sup.watch())
finally:
    sup.stop_all()
"""


@contextlib.asynccontextmanager
async def running(path: Path, *args: str, env: dict[str, str]) -> AsyncIterator[Process]:
    """`python *args` with its output in `path`; killed if it still runs at the end."""
    with path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=out,
        )
    async with reaped(proc):
        yield proc


async def stop_twice(
    proc: Process, out: Path, stopping: str, between: Callable[[], None] = lambda: None
) -> tuple[int, str]:
    """SIGTERM, await the line that says the stop is under way, SIGTERM again: the exit
    code and the whole output."""
    proc.send_signal(signal.SIGTERM)
    await until(lambda: said(out, stopping), timeout=10)
    between()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), EXIT_S)
    return code, await asyncio.to_thread(out.read_text)


def said(path: Path, text: str) -> bool:
    return text in path.read_text(errors="replace")


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_a_second_sigterm_ends_a_worker_stuck_in_its_drain(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    out = tmp_path / "worker.log"
    env = {"NATS_URL": nats_server.url, "NATS_DRAIN_TIMEOUT_S": "600", "LOG_LEVEL": "INFO"}
    async with running(out, "-c", STUCK_WORKER, env=env) as proc:
        await until(lambda: said(out, "worker.started"), timeout=30)
        await nc.publish("test.stuck", b"{}", reply=nc.new_inbox())  # held by the handler
        await nc.flush()
        await until(lambda: said(out, "probe.taken"), timeout=10)
        code, text = await stop_twice(proc, out, "worker.stopping")
    assert code == 128 + signal.SIGTERM, text
    assert "worker.forced_exit" in text
    assert "worker.stopped" not in text  # the drain never finished: the exit was forced


async def test_a_second_sigterm_makes_the_supervisor_kill_a_child_that_ignores_its_stop(
    tmp_path: Path,
) -> None:
    out = tmp_path / "supervisor.log"
    args = ("-c", SUPERVISOR, str(tmp_path / "logs"), STUBBORN_CHILD)
    async with running(out, *args, env={}) as proc:
        await until(lambda: said(out, "stack: up;"), timeout=30)
        child_pid = int(out.read_text().split("stubborn is pid ", 1)[1].split()[0])

        def still_running() -> None:  # it ignored the SIGTERM of the orderly stop
            assert not gone(child_pid)

        code, text = await stop_twice(proc, out, "stack: stopping", still_running)
    assert code == 128 + signal.SIGTERM, text
    assert "stack: second SIGTERM: forced stop, killed stubborn" in text
    await until(lambda: gone(child_pid), timeout=10)
