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
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from schemas.governor import ConfigApplied
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from structlog.typing import FilteringBoundLogger

__all__ = ["ConfigWatch", "cluster_replicas", "decode_entry", "ensure_stream"]

_decode = msgspec.json.Decoder(ConfigApplied).decode
RETRY = Backoff(base_s=1.0, cap_s=10.0)  # while JetStream does not answer


def decode_entry(data: bytes) -> ConfigApplied:
    return _decode(data)


def cluster_replicas(nc: Client) -> int:
    """Copies of the config log to ask for when no one said: 3 on a cluster of 3 or more
    nodes (the servers this connection knows, given or announced), else 1.

    A reader that starts before the governor creates the stream with this many, so the
    governor never has to scale it up later (a stream scaled up from 1 copy is without
    quorum until the new copies catch up, which a node loss right then turns into a stall).
    """
    known = {(url.hostname, url.port) for url in nc.servers}
    return 3 if len(known) >= 3 else 1


async def ensure_stream(
    js: JetStreamContext, *, history: int = 10_000, replicas: int = 1, update: bool = True
) -> None:
    """Create the config stream if missing; with `update`, also bring its limits to these.

    Only the governor owns the limits (GOVERNOR_HISTORY, GOVERNOR_REPLICAS): readers
    create the stream when they start first, and never change it.
    """
    config = api.StreamConfig(
        name=subjects.CONFIG_STREAM,
        subjects=[subjects.every(subjects.CONFIG_LOG)],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=history,
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
        allow_direct=True,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:  # exists with other limits
        if update:
            await js.update_stream(config)


class ConfigWatch(Lifecycle):
    """Calls `on_entry` for the latest config of every service, then for every new one.

    `synced` is set once the latest entries present at start have all been delivered;
    a worker awaits `loaded()` before it serves. Until JetStream answers, it retries in
    the background (services/retry.py): a worker runs without config (every service on
    defaults) rather than not at all. Leaving ends the subscription.
    """

    def __init__(
        self,
        nc: Client,
        log: FilteringBoundLogger,
        on_entry: Callable[[ConfigApplied], Awaitable[None]],
        *,
        retry: Backoff = RETRY,
    ) -> None:
        self.nc = nc
        self.log = log
        self.on_entry = on_entry
        self.retry = retry
        self.synced = asyncio.Event()
        self.applied = 0

    async def start(self) -> None:
        self.spawn(self._follow(), "config.watch")

    async def loaded(self, wait_s: float) -> bool:
        """Wait at most `wait_s` for the config present at start; False (logged) if it
        did not all come: the worker serves on what it has, the rest follows."""
        try:
            await asyncio.wait_for(self.synced.wait(), wait_s)
        except TimeoutError:
            self.log.warning("config.not_loaded", waited_s=wait_s, applied=self.applied)
            return False
        return True

    async def _follow(self) -> None:
        js = self.nc.jetstream()
        retry = self.retry.retry()
        while True:
            try:
                await ensure_stream(js, replicas=cluster_replicas(self.nc), update=False)
                info = await js.stream_info(subjects.CONFIG_STREAM)
                sub = await js.subscribe(
                    subjects.every(subjects.CONFIG_LOG),
                    cb=self._on_msg,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    stream=subjects.CONFIG_STREAM,
                )
            except (nats.errors.Error, OSError) as exc:
                self.log.warning("config.watch_failed", error=repr(exc), attempt=retry.attempts)
                await retry.wait()
                continue
            self.own(sub, drain=False)  # an entry cut short comes again on the next start
            if not info.state.messages:
                self.synced.set()
            self.log.info("config.watching", entries=info.state.messages)
            return

    async def _on_msg(self, msg: Msg) -> None:
        try:
            entry = _decode(msg.data)
            await self.on_entry(entry)
            self.applied += 1
        except Exception:  # one bad entry must not stop the watch
            self.log.exception("config.entry_failed", subject=msg.subject)
        if msg.metadata.num_pending == 0:
            self.synced.set()
