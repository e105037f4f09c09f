"""The config center's JetStream side, on services/stream: one stream, one subject per key.

`baton.kv.v1.<key tokens>` holds a key's records, oldest first, at most `history` of them
(records kept per subject); the stream's sequence of a record is its modify index. A write
is appended if the key's last sequence is still the one it was built on (services/stream's
Writer: compare-and-set), so concurrent writers need no lock. The stream republishes every
record as it stores it on `kv.v1.changes.<key tokens>`: a watch is a plain subscription,
told within milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from schemas import subjects
from schemas.kv import KvRecord
from services.lifecycle import Lifecycle
from services.stream import (
    Follower,
    LostRace,
    StreamSpec,
    Writer,
    cluster_replicas,
    ensure_stream,
    replay,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.stream import Record

__all__ = ["KvLog", "LostRace"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(KvRecord).decode
WHAT: Final = "the config center's store"


class KvLog(Lifecycle):
    """Ensure the stream, follow it into `on_record` (then `on_followed`), append with
    compare-and-set, and read a key's history. `caught_up` is set once every key's latest
    record present at start has been delivered."""

    def __init__(
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        on_record: Callable[[KvRecord, int], object],
        on_followed: Callable[[int], object],
        *,
        history: int,
        replicas: int,
        timeout_s: float,
    ) -> None:
        self.bus = bus
        self.log = log
        self.on_record = on_record
        self.on_followed = on_followed  # each sequence delivered, in stream order
        self.timeout_s = timeout_s
        self.spec = StreamSpec(
            name=subjects.KV_STREAM,
            subjects=(subjects.every(subjects.KV_LOG),),
            per_subject=history,
            replicas=replicas or cluster_replicas(bus),
            republish=(subjects.every(subjects.KV_LOG), subjects.every(subjects.KV_CHANGES)),
        )
        self.writer = Writer(bus, stream=subjects.KV_STREAM, what=WHAT, timeout_s=timeout_s)
        self.follower = Follower(
            bus,
            log,
            self._on_record,
            stream=subjects.KV_STREAM,
            subject=subjects.every(subjects.KV_LOG),
            noun="kv",
            timeout_s=timeout_s,
        )

    @property
    def caught_up(self) -> asyncio.Event:
        return self.follower.caught_up

    async def ensure(self) -> None:
        """Create the stream, or bring it to this worker's limits (it owns them)."""
        await ensure_stream(self.bus, self.spec, timeout_s=self.timeout_s)

    async def start(self) -> None:
        await self.enter(self.follower)

    def _on_record(self, record: Record) -> None:
        try:
            self.on_record(_decode(record.data), record.seq)
        finally:  # a record that failed (logged by the follower) is followed all the same
            self.on_followed(record.seq)

    async def append(self, record: KvRecord, expected: int) -> int:
        """Store `record` if its key's last sequence is `expected` (0: none); its sequence.
        LostRace if another write came first, Unavailable if it was not stored."""
        subject = subjects.kv_subject(subjects.KV_LOG, record.key)
        return await self.writer.append(subject, _encode(record), after=expected)

    async def last(self, key: str) -> tuple[KvRecord | None, int]:
        """The key's last record and its sequence, read from the stream (not the index)."""
        found = await self.writer.last(subjects.kv_subject(subjects.KV_LOG, key))
        return (None, 0) if found is None else (_decode(found.data), found.seq)

    async def newest(self) -> int:
        """The sequence of the newest record the stream holds (0: none): what a consistent
        read waits for this replica to have followed."""
        found = await self.writer.last(subjects.every(subjects.KV_LOG))
        return 0 if found is None else found.seq

    async def history(self, key: str) -> list[tuple[KvRecord, int]]:
        """The key's kept records, oldest first, with their sequences."""
        out: list[tuple[KvRecord, int]] = []

        def keep(record: Record) -> None:
            out.append((_decode(record.data), record.seq))

        subject = subjects.kv_subject(subjects.KV_LOG, key)
        await replay(self.writer, subject, keep, idle_s=self.timeout_s)
        return out
