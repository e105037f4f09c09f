"""The demo's operator: steers the fleet through the governor's public subjects, so the
dashboards show config changes and drains (silent when no governor runs), rotates the
service's strategy as `baton set SERVICE strategy=NAME` would, and starts a batch worker
that crashes, so they show failure detection too."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import TYPE_CHECKING

import msgspec
import nats.errors

from schemas import subjects
from schemas.balancer import STRATEGIES
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch, ServiceConfig
from schemas.registry import Ack, Empty, Registration
from services.errors import BatonError, Conflict

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.msg import Msg
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["ACTOR", "BATCH_SERVICE", "Rotation", "steer"]

BATCH_SERVICE = "demo-batch"
ACTOR = "demo-operator"


def _changes(ids: list[str]) -> itertools.cycle[tuple[str, ConfigChange]]:
    slowest, fastest = ids[-1], ids[0]
    return itertools.cycle(
        [
            (
                f"drain {slowest}",
                ConfigChange(
                    actor=ACTOR,
                    reason="demo: drain the slowest instance",
                    instances={slowest: OverridePatch(drained=True)},
                ),
            ),
            (
                f"undrain {slowest}",
                ConfigChange(
                    actor=ACTOR,
                    reason="demo: put it back",
                    instances={slowest: OverridePatch(drained=None)},
                ),
            ),
            (
                f"weight {fastest} 10",
                ConfigChange(
                    actor=ACTOR,
                    reason="demo: take weight off the fastest",
                    instances={fastest: OverridePatch(weight=10)},
                ),
            ),
            (
                f"weight {fastest} back",
                ConfigChange(
                    actor=ACTOR,
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


def next_strategy(current: str) -> str:
    """The strategy after `current` in the contract's order, wrapping around."""
    names = list(STRATEGIES)
    return names[(names.index(current) + 1) % len(names)] if current in names else names[0]


class Rotation:
    """Every `every_s`, the service's next strategy, set through the governor as an
    operator's `baton set SERVICE strategy=NAME` is: the clients follow the service's
    config, so the change shows in the table. Once someone else changes the service's
    config, the rotation stops for good, so that an operator's own choice stays in effect.
    """

    def __init__(
        self,
        bus: Bus,
        service: str,
        every_s: float,
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.service = service
        self.every_s = every_s
        self.log = log
        self.clock = clock
        self.next_at = clock() + every_s
        self.stopped = ""  # why the rotation ended, for the table
        self._expected: str | None = None  # the strategy the service should have now

    def describe(self) -> str:
        if self.stopped:
            return f"rotation stopped: {self.stopped}"
        return f"next strategy in {max(0.0, self.next_at - self.clock()):.0f} s"

    def on_applied(self, entry: ConfigApplied) -> None:
        """A change of the service's config: someone else's ends the rotation."""
        if entry.actor != ACTOR and not self.stopped:
            self.stopped = f"{entry.actor} changed the service's config (revision {entry.revision})"
            self.log.info("demo.rotation_stopped", actor=entry.actor, revision=entry.revision)

    async def run(self, stop: asyncio.Event) -> None:
        decode = msgspec.json.Decoder(ConfigApplied).decode

        async def on_msg(msg: Msg) -> None:
            with contextlib.suppress(msgspec.MsgspecError):
                self.on_applied(decode(msg.data))

        sub = await self.bus.nc.subscribe(subjects.applied(self.service), cb=on_msg)
        try:
            with contextlib.suppress(BatonError):  # what the service has before the first step
                config = await self.bus.request(
                    subjects.config(self.service), Empty(), ServiceConfig
                )
                self._expected = config.strategy
            await self._loop(stop)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _loop(self, stop: asyncio.Event) -> None:
        while not self.stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, self.next_at - self.clock()))
            if stop.is_set() or self.stopped:
                return
            self.next_at = self.clock() + self.every_s
            try:
                await self.step()
            except BatonError as exc:  # no governor: the demo goes on without rotating
                self.log.info("demo.rotation_skipped", reason=exc.message)

    async def step(self) -> None:
        """Set the next strategy, unless someone else has set one since the last step."""
        service = self.service
        current = await self.bus.request(subjects.config(service), Empty(), ServiceConfig)
        if self.stopped:
            return
        if self._expected is not None and current.strategy != self._expected:  # missed event
            self.stopped = (
                f"{current.strategy} was set by someone else (revision {current.revision})"
            )
            self.log.info("demo.rotation_stopped", strategy=current.strategy)
            return
        strategy = next_strategy(current.strategy)
        change = ConfigChange(
            actor=ACTOR,
            reason="demo: rotate the strategy",
            strategy=strategy,
            expected_revision=current.revision,
        )
        try:
            applied = await self.bus.request(subjects.change(service), change, ConfigApplied)
        except Conflict:  # changed meanwhile: look again at the next step
            return
        self._expected = strategy
        self.log.info("demo.strategy_rotated", strategy=strategy, revision=applied.revision)
