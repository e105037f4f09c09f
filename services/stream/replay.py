"""A bounded read: every record of a subject stored so far, oldest first, then done.

One ordered consumer streams them, instead of one request per record: 10,000 records
are one subscription, not 10,000 round trips (tests/bench/bench_history.py). The read
ends at the record that was the subject's last when it began; its deadline is on
progress, not on the whole read (10,000 records take a while on a busy host).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import nats.errors
from nats.js import api

from services.stream.record import Record, from_delivered
from services.stream.writer import Writer, unreachable

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from nats.aio.msg import Msg

__all__ = ["replay"]


async def replay(
    store: Writer,
    subject: str,
    on_record: Callable[[Record], None],
    *,
    since: datetime | None = None,
    idle_s: float,
) -> None:
    """Pass each record of `subject` in `store`'s stream (from `since`, server side) to
    `on_record`, oldest first, up to the last one stored when the read began.

    Raises Unavailable if JetStream does not answer, or if no record came for `idle_s`;
    an exception from `on_record` ends the read and is raised from here.
    """
    last = await store.last(subject)
    if last is None:
        return
    if since is not None and last.time is not None and last.time < since:
        return  # nothing that new: a consumer from `since` would wait for nothing
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_TIME if since else api.DeliverPolicy.ALL,
        opt_start_time=since,
    )
    reading = _Read(on_record, last.seq)
    try:
        sub = await store.js.subscribe(
            subject, stream=store.stream, cb=reading.on_msg, ordered_consumer=True, config=config
        )
    except (nats.errors.Error, OSError) as exc:
        raise unreachable(store.what, store.stream, exc) from exc
    try:
        await reading.done(lambda exc: unreachable(store.what, store.stream, exc), idle_s)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


class _Read:
    """One read: what the ordered consumer delivers, until the record that was last."""

    def __init__(self, on_record: Callable[[Record], None], last: int) -> None:
        self.on_record = on_record
        self.last = last
        self.read = 0
        self.failed: Exception | None = None
        self._done = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:  # a callback: next_msg() costs ~3x as much
        if self._done.is_set():
            return
        self.read += 1
        record = from_delivered(msg)
        try:
            self.on_record(record)
        except Exception as exc:  # noqa: BLE001  # raised to the reader, in done()
            self.failed = exc
            self._done.set()
            return
        if record.pending == 0 or record.seq >= self.last:
            self._done.set()

    async def done(self, timed_out: Callable[[Exception], Exception], idle_s: float) -> None:
        """Until the last record came; `timed_out` if none came for `idle_s`."""
        while not self._done.is_set():
            before = self.read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), idle_s)
            if not self._done.is_set() and self.read == before:
                raise timed_out(TimeoutError(f"no entry within {idle_s:g} s"))
        if self.failed is not None:
            raise self.failed
