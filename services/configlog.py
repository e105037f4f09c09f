"""The durable log of accepted config changes, and a watch that follows it.

One JetStream stream holds every `ConfigApplied`, one subject per service, oldest first:
the latest entry of a subject is the service's config; the whole subject is its history.
The governor appends with compare-and-set on the subject's last sequence, so replicas
need no lock. Registry and balancer follow the stream with an ordered consumer that
delivers the latest entry of every service first, then each new one as it is stored:
they have the config at start, and every change within milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from schemas import subjects
from schemas.governor import ConfigApplied
from services.retry import Backoff
from services.stream import Follower, StreamSpec, cluster_replicas, never
from services.stream import ensure_stream as ensure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.stream import Record

__all__ = ["ConfigWatch", "config_spec", "decode_entry", "ensure_stream"]

_decode = msgspec.json.Decoder(ConfigApplied).decode
RETRY = Backoff(base_s=1.0, cap_s=10.0)  # while JetStream does not answer


def decode_entry(data: bytes) -> ConfigApplied:
    return _decode(data)


def config_spec(*, history: int = 10_000, replicas: int = 1) -> StreamSpec:
    """The config log: every service's entries, the newest `history` of each kept."""
    return StreamSpec(
        name=subjects.CONFIG_STREAM,
        subjects=(subjects.every(subjects.CONFIG_LOG),),
        per_subject=history,
        replicas=replicas,
        duplicate_window_s=120.0,
    )


async def ensure_stream(
    bus: Bus,
    *,
    history: int = 10_000,
    replicas: int = 1,
    update: bool = True,
    timeout_s: float = 5.0,
) -> None:
    """Create the config stream if missing; with `update`, also bring its limits to these.

    Only the governor owns the limits (GOVERNOR_HISTORY, GOVERNOR_REPLICAS): readers
    create the stream when they start first, and never change it.
    """
    spec = config_spec(history=history, replicas=replicas)
    if update:
        await ensure(bus, spec, timeout_s=timeout_s)
    else:
        await ensure(bus, spec, outdated=never, timeout_s=timeout_s)


class ConfigWatch(Follower):
    """Calls `on_entry` for the latest config of every service, then for every new one.

    `synced` is set once the latest entries present at start have all been delivered;
    a worker awaits `loaded()` before it serves. Until JetStream answers, it retries in
    the background (services/retry.py): a worker runs without config (every service on
    defaults) rather than not at all. Leaving ends the subscription.
    """

    def __init__(
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        on_entry: Callable[[ConfigApplied], Awaitable[None]],
        *,
        retry: Backoff = RETRY,
    ) -> None:
        super().__init__(
            bus,
            log,
            self._on_record,
            stream=subjects.CONFIG_STREAM,
            subject=subjects.every(subjects.CONFIG_LOG),
            noun="config",
            prepare=self._prepare,
            retry=retry,
        )
        self.on_entry = on_entry

    @property
    def synced(self) -> asyncio.Event:
        return self.caught_up

    async def loaded(self, wait_s: float) -> bool:
        """Wait at most `wait_s` for the config present at start; False (logged) if it
        did not all come: the worker serves on what it has, the rest follows."""
        try:
            await asyncio.wait_for(self.caught_up.wait(), wait_s)
        except TimeoutError:
            self.log.warning("config.not_loaded", waited_s=wait_s, applied=self.applied)
            return False
        return True

    async def _prepare(self) -> None:  # a reader that starts first creates the log
        await ensure_stream(self.bus, replicas=cluster_replicas(self.bus), update=False)

    async def _on_record(self, record: Record) -> None:
        await self.on_entry(_decode(record.data))
