"""The governor's side of the config log: read the latest entry, append with CAS, history."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from services.configlog import decode_entry
from services.errors import BatonError, Conflict, Unavailable
from services.jetstream import WRONG_LAST_SEQUENCE

if TYPE_CHECKING:
    from datetime import datetime

    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from schemas.governor import ConfigApplied

__all__ = ["ConfigStore", "StaleWriteError"]

_encode = msgspec.json.Encoder().encode


class StaleWriteError(Conflict):
    """Another change was stored since the entry this one was built on."""

    def __init__(self, message: str = "a concurrent change was stored first") -> None:
        super().__init__(message)


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(
        f"the config store (JetStream stream {subjects.CONFIG_STREAM}) is not reachable: "
        f"{exc!r}; check that nats-server runs with JetStream enabled"
    )


class ConfigStore:
    def __init__(self, js: JetStreamContext, *, timeout_s: float) -> None:
        self.js = js
        self.timeout_s = timeout_s

    async def latest(self, service: str) -> tuple[ConfigApplied | None, int]:
        """The service's newest entry and its stream sequence (None, 0 if never set)."""
        try:
            raw = await self.js.get_last_msg(subjects.CONFIG_STREAM, subjects.config_log(service))
        except nats.js.errors.NotFoundError:
            return None, 0
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        assert raw.data is not None  # noqa: S101  # a stored entry always has a body
        return decode_entry(raw.data), raw.seq or 0

    async def append(self, entry: ConfigApplied, after_seq: int) -> int:
        """Store `entry` if the service's last entry is still `after_seq`; its sequence.

        Returns once JetStream has stored it (acknowledged), so it survives restarts.
        """
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(after_seq)}
        try:
            ack = await self.js.publish(
                subjects.config_log(entry.service),
                _encode(entry),
                timeout=self.timeout_s,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise StaleWriteError from None
            raise _unavailable(exc) from exc
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        return ack.seq

    async def history(
        self,
        service: str,
        *,
        limit: int = 0,
        since_revision: int = 0,
        since: datetime | None = None,
    ) -> list[ConfigApplied]:
        """The service's stored entries, oldest first: those from `since` (server side) and
        `since_revision` on, the newest `limit` of them (0: all).

        One ordered consumer streams them, instead of one request per revision: 10,000
        revisions are one subscription, not 10,000 round trips (tests/bench/bench_history.py).
        """
        subject = subjects.config_log(service)
        try:
            last = await self.js.get_last_msg(subjects.CONFIG_STREAM, subject)
        except nats.js.errors.NotFoundError:
            return []
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        if since is not None and last.time is not None and last.time < since:
            return []  # nothing that new: a consumer from `since` would wait for nothing
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME if since else api.DeliverPolicy.ALL,
            opt_start_time=since,
        )
        reading = _Read(limit, since_revision, since, last.seq or 0)
        try:
            sub = await self.js.subscribe(
                subject,
                stream=subjects.CONFIG_STREAM,
                cb=reading.on_msg,
                ordered_consumer=True,
                config=config,
            )
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        try:
            await reading.done(self.timeout_s)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return list(reading.kept)


class _Read:
    """One history read: what the ordered consumer delivers, kept if it is asked for,
    until the entry that was the service's last when the read began."""

    def __init__(self, limit: int, since_revision: int, since: datetime | None, last: int) -> None:
        self.kept: collections.deque[ConfigApplied] = collections.deque(maxlen=limit or None)
        self.since_revision = since_revision
        self.since = since
        self.last = last
        self.read = 0
        self.failed: Exception | None = None
        self._done = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:  # a callback: next_msg() costs ~3x as much
        self.read += 1
        try:
            entry = decode_entry(msg.data)
        except msgspec.DecodeError as exc:  # a bad entry must not hang the read
            self.failed = exc
            self._done.set()
            return
        if entry.revision >= self.since_revision and (self.since is None or entry.at >= self.since):
            self.kept.append(entry)
        meta = msg.metadata
        if meta.num_pending == 0 or meta.sequence.stream >= self.last:
            self._done.set()

    async def done(self, idle_s: float) -> None:
        """Until the last entry came; Unavailable if none came for `idle_s` (a deadline on
        progress, not on the whole read: 10,000 entries take a while on a busy host)."""
        while not self._done.is_set():
            before = self.read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), idle_s)
            if not self._done.is_set() and self.read == before:
                raise _unavailable(TimeoutError(f"no entry within {idle_s:g} s"))
        if self.failed is not None:
            raise BatonError(f"the config log holds an entry that does not decode: {self.failed}")
