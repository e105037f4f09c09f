"""The governor's side of the config log: read the latest entry, append with CAS, history.

The JetStream patterns are services/stream's: its writer's compare-and-set (a lost race
is `StaleWriteError`, the stream's `LostRace`) and its bounded replay for the history.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import msgspec

from schemas import subjects
from services.configlog import decode_entry
from services.errors import BatonError
from services.stream import LostRace, Writer, replay

if TYPE_CHECKING:
    from datetime import datetime

    from schemas.governor import ConfigApplied
    from services.bus import Bus
    from services.stream import Record

__all__ = ["ConfigStore", "StaleWriteError"]

_encode = msgspec.json.Encoder().encode

StaleWriteError = LostRace  # another change was stored since the entry this one built on


class ConfigStore:
    def __init__(self, bus: Bus, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.stream = Writer(
            bus, stream=subjects.CONFIG_STREAM, what="the config store", timeout_s=timeout_s
        )

    async def latest(self, service: str) -> tuple[ConfigApplied | None, int]:
        """The service's newest entry and its stream sequence (None, 0 if never set)."""
        last = await self.stream.last(subjects.config_log(service))
        if last is None:
            return None, 0
        return decode_entry(last.data), last.seq

    async def append(self, entry: ConfigApplied, after_seq: int) -> int:
        """Store `entry` if the service's last entry is still `after_seq`; its sequence.

        Returns once JetStream has stored it (acknowledged), so it survives restarts.
        Raises StaleWriteError if another change came first, Unavailable if not stored.
        """
        return await self.stream.append(
            subjects.config_log(entry.service), _encode(entry), after=after_seq
        )

    async def history(
        self,
        service: str,
        *,
        limit: int = 0,
        since_revision: int = 0,
        since: datetime | None = None,
    ) -> list[ConfigApplied]:
        """The service's stored entries, oldest first: those from `since` (server side) and
        `since_revision` on, the newest `limit` of them (0: all)."""
        kept: collections.deque[ConfigApplied] = collections.deque(maxlen=limit or None)

        def keep(record: Record) -> None:
            try:
                entry = decode_entry(record.data)
            except msgspec.DecodeError as exc:  # a bad entry must not hang the read
                raise BatonError(
                    f"the config log holds an entry that does not decode: {exc}"
                ) from None
            if entry.revision >= since_revision and (since is None or entry.at >= since):
                kept.append(entry)

        await replay(
            self.stream, subjects.config_log(service), keep, since=since, idle_s=self.timeout_s
        )
        return list(kept)
