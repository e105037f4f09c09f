"""The demo: a fleet, its clients, and a live table of where the calls went."""

from __future__ import annotations

import asyncio
import contextlib
from typing import IO, TYPE_CHECKING, TypeVar

from services.bus import Bus
from services.demo.fleet import Fleet
from services.demo.operator import Rotation, steer
from services.demo.traffic import Stats, Traffic
from services.demo.view import View
from services.sdk import BalancerClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from structlog.typing import FilteringBoundLogger

    from services.demo.settings import DemoSettings

__all__ = ["render", "run", "strategy_line", "unless_stopped"]

T = TypeVar("T")
_CLEAR = "\x1b[H\x1b[2J"
_COLUMNS = (
    "instance",
    "zone",
    "state",  # drained, unhealthy (and, later, ejected); "-" when it takes traffic
    "weight",  # in effect: the operator's override, else the registered one
    "speed",
    "picks/s",
    "inflight",
    "p50",
    "p99",
    "errors",
)
_LEFT = 3  # columns aligned left; the figures after them right


async def unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `aw`, or cancel it when `stop` is set first (then return None)."""
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None


def strategy_line(settings: DemoSettings, view: View, rotation: Rotation | None) -> str:
    """Which strategy picks, and who decides it: DEMO_STRATEGY, else the service's config."""
    if settings.per_request:
        return f"strategy {settings.per_request} (DEMO_STRATEGY: asked in every request)"
    config = view.config
    if config is None:
        return "strategy: the service's configured one (no governor answers)"
    said = f"strategy {config.strategy} (the service's config, revision {config.revision}"
    return f"{said}; {rotation.describe()})" if rotation else f"{said})"


def render(fleet: Fleet, stats: Stats, view: View, strategy: str) -> str:
    """The table: one row per instance, over the last `stats.window_s` seconds."""
    window_s = stats.window_s
    rows = [_COLUMNS]
    for backend in fleet.backends:
        w = stats.window(backend.instance_id)
        iid = backend.instance_id
        rows.append(
            (
                iid,
                backend.zone,
                view.state(iid) or "-",
                str(view.weight(iid, backend.weight)),
                f"{backend.mean_ms:g} ms" + ("*" if backend.hiccups else ""),
                f"{w.calls / window_s:.1f}",
                str(backend.inflight),
                f"{w.p50_ms:.1f}",
                f"{w.p99_ms:.1f}",
                str(w.errors),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    answered = f"; the balancer's latest answer used {stats.strategy}" if stats.strategy else ""
    lines = [
        f"Baton demo: service {view.service}, {strategy}{answered}",
        (
            f"calls {stats.total_calls}, resolve errors {stats.resolve_errors}, "
            f"window {window_s:g} s, latencies in ms as the clients saw them "
            "(* occasionally slow)"
        ),
        "",
    ]
    for i, row in enumerate(rows):
        cells = [
            c.ljust(w) if j < _LEFT else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _print_loop(
    draw: Callable[[], str], out: IO[str], stop: asyncio.Event, interval_s: float, tty: bool
) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        out.write((_CLEAR if tty else "") + draw() + "\n\n")
        out.flush()


async def run(
    nc: Client,
    settings: DemoSettings,
    log: FilteringBoundLogger,
    stop: asyncio.Event,
    out: IO[str],
) -> Fleet | None:
    """Run the demo until `stop` is set (or `duration_s` passes); return the fleet it ran,
    or None when stopped before the fleet was up. Prints a last table at the end.
    """
    fleet = Fleet(nc, settings, log)
    async with contextlib.AsyncExitStack() as stack:
        if await unless_stopped(stack.enter_async_context(fleet), stop) is None:
            return None
        log.info("demo.started", instances=len(fleet.backends), clients=settings.clients)
        stats = Stats(window_s=settings.window_s)
        client = await stack.enter_async_context(BalancerClient(nc, log=log))  # flushes on exit
        traffic = Traffic(client, settings, stats, log)
        tty = out.isatty()
        interval_s = settings.print_s or (1.0 if tty else 5.0)
        bus = Bus(nc, log)
        view = View(bus, settings.service)
        await view.refresh()
        rotation = (
            Rotation(bus, settings.service, settings.cycle_s, log) if settings.rotates else None
        )

        def draw() -> str:
            return render(fleet, stats, view, strategy_line(settings, view, rotation))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(traffic.run(stop))
            tg.create_task(view.run(stop, min(interval_s, 1.0)))
            tg.create_task(_print_loop(draw, out, stop, interval_s, tty))
            if rotation is not None:
                tg.create_task(rotation.run(stop))
            if settings.operator_s:
                ids = sorted(b.instance_id for b in fleet.backends)
                tg.create_task(steer(bus, settings.service, ids, settings.operator_s, stop, log))
            if settings.duration_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.duration_s)
                stop.set()
        out.write(draw() + "\n")
        out.flush()
    log.info("demo.stopped")
    return fleet
