"""The demo's operator: steers the fleet through the governor's public subjects, so the
dashboards show config changes and drains (silent when no governor runs), and starts a
batch worker that crashes, so they show failure detection too."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack, Registration
from services.errors import BatonError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["BATCH_SERVICE", "steer"]

BATCH_SERVICE = "demo-batch"


def _changes(ids: list[str]) -> itertools.cycle[tuple[str, ConfigChange]]:
    slowest, fastest = ids[-1], ids[0]
    return itertools.cycle(
        [
            (
                f"drain {slowest}",
                ConfigChange(
                    actor="demo-operator",
                    reason="demo: drain the slowest instance",
                    instances={slowest: OverridePatch(drained=True)},
                ),
            ),
            (
                f"undrain {slowest}",
                ConfigChange(
                    actor="demo-operator",
                    reason="demo: put it back",
                    instances={slowest: OverridePatch(drained=None)},
                ),
            ),
            (
                f"weight {fastest} 10",
                ConfigChange(
                    actor="demo-operator",
                    reason="demo: take weight off the fastest",
                    instances={fastest: OverridePatch(weight=10)},
                ),
            ),
            (
                f"weight {fastest} back",
                ConfigChange(
                    actor="demo-operator",
                    reason="demo: restore its weight",
                    instances={fastest: OverridePatch(weight=None)},
                ),
            ),
        ]
    )


async def steer(
    bus: Bus,
    service: str,
    ids: list[str],
    every_s: float,
    stop: asyncio.Event,
    log: FilteringBoundLogger,
) -> None:
    """Apply the next change every `every_s` until `stop`."""
    for what, change in _changes(ids):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            applied = await bus.request(subjects.change(service), change, ConfigApplied)
            log.info("demo.operator_changed", change=what, revision=applied.revision)
        except BatonError as exc:  # no governor: the demo goes on without governance
            log.info("demo.operator_skipped", change=what, reason=exc.message)
        await _crashing_batch_worker(bus, log)


async def _crashing_batch_worker(bus: Bus, log: FilteringBoundLogger) -> None:
    """A batch worker of another service that registers and then dies without a word, so
    the registry's failure detection (unhealthy, then expired) shows on the dashboards.
    No client calls that service, so the demo's traffic never sees it."""
    reg = Registration(instance_id="demo-batch-1", host="127.0.0.1", port=9, ttl_s=2)
    try:
        await bus.request(subjects.register(BATCH_SERVICE), reg, Ack)
    except BatonError as exc:
        log.info("demo.batch_worker_skipped", reason=exc.message)
