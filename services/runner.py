"""Run a worker as a process: settings, logs, signals -> one stop event -> graceful drain.

A worker is an async context manager built from (bus, settings, log): entering it
subscribes and starts its loops, leaving it stops them. The runner owns the order:
connect, enter, announce it on `$SRV.PING/INFO/STATS` (services/micro.py: from here on
it is ready), wait for SIGINT/SIGTERM, stop announcing, drain subscriptions (finishing
messages already received), leave the worker, drain the connection.

A second SIGINT/SIGTERM during that stop forces the exit at once, as uvicorn's does: the
process logs `worker.forced_exit` and ends with 128 + the signal's number (130 for
Ctrl-C, 143 for SIGTERM), whatever the drain was still waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from msgspec import Struct
from structlog.typing import FilteringBoundLogger

from services import logs, micro
from services.bus import Bus, connect
from services.config import BusSettings, SettingsError, load, load_bus
from services.errors import NotAuthorized, StartupError

__all__ = ["WorkerFactory", "describe", "main", "serve", "stop_on_signals"]

S = TypeVar("S", bound=Struct)
WorkerFactory = Callable[[Bus, S, FilteringBoundLogger], AbstractAsyncContextManager[Any]]


async def serve(
    name: str,
    factory: WorkerFactory[S],
    *,
    settings: S,
    bus_settings: BusSettings,
    log: FilteringBoundLogger,
    stop: asyncio.Event,
) -> None:
    async with (
        connect(bus_settings, log, name=micro.worker_name(name)) as bus,
        factory(bus, settings, log),
    ):
        async with micro.announce(bus, name, description=describe(factory)) as service:
            log.info("worker.started", settings=settings, id=service.id)
            await stop.wait()
            log.info("worker.stopping")
        await bus.drain()
    log.info("worker.stopped")


def stop_on_signals(stop: asyncio.Event, log: FilteringBoundLogger) -> None:
    """SIGINT/SIGTERM set `stop` (a graceful drain); a second one ends the process now.

    The exit is `os._exit`: a drain stuck on a handler (or on a server that went away)
    could swallow a cancel and hold `asyncio.run`'s own clean-up too.
    """
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("worker.stop_requested", signal=sig.name)
            stop.set()
            return
        log.warning("worker.forced_exit", signal=sig.name, exit_code=128 + sig.value)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(128 + sig.value)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


def describe(factory: object) -> str:
    """The first line of the worker's module docstring: its `$SRV.INFO` description."""
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    doc = (module.__doc__ if module else None) or getattr(factory, "__doc__", None) or ""
    return doc.strip().split("\n", 1)[0]


def main(name: str, factory: WorkerFactory[S], settings_type: type[S], prefix: str) -> None:
    """Entry point of `python -m services.<name>`."""
    logs.configure(os.environ.get("LOG_LEVEL", "INFO"))
    log = logs.get_logger(name)
    try:
        settings = load(settings_type, prefix)
        bus_settings = load_bus()
    except SettingsError as exc:
        log.exception("settings.invalid", error=str(exc))
        sys.exit(2)

    async def run() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop, log)
        await serve(name, factory, settings=settings, bus_settings=bus_settings, log=log, stop=stop)

    # What the imports built lives as long as the process: the collector need not walk it
    # again (a full collection of those ~40k objects stalls every message for 7-10 ms).
    gc.freeze()
    try:
        asyncio.run(run())
    except NotAuthorized as exc:
        log.error("bus.not_authorized", error=str(exc))  # noqa: TRY400  # the sentence is enough
        sys.exit(2)
    except StartupError as exc:
        log.error("worker.cannot_start", error=exc.message)  # noqa: TRY400
        sys.exit(2)
