"""The config center's JetStream side: one stream, one subject per key.

`baton.kv.v1.<key tokens>` holds a key's records, oldest first, at most `history` of them
(max msgs per subject); the stream's sequence of a record is its modify index. A write
carries `Nats-Expected-Last-Subject-Sequence` (compare-and-set), so concurrent writers
need no lock. The stream republishes every record as it stores it on
`kv.v1.changes.<key tokens>`: a watch is a plain subscription, told within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from schemas.kv import KvRecord
from services.errors import Conflict, Unavailable
from services.jetstream import WRONG_LAST_SEQUENCE
from services.lifecycle import Lifecycle

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from structlog.typing import FilteringBoundLogger

__all__ = ["KvLog", "LostRaceError", "cluster_replicas"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(KvRecord).decode
# a record is a 512 KiB value in base64 (4/3) plus its key and audit fields
MAX_RECORD = 1024 * 1024


class LostRaceError(Conflict):
    """The key's last sequence was not the one the write expected."""


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(
        f"the config center's store (JetStream stream {subjects.KV_STREAM}) is not "
        f"reachable: {exc!r}; check that nats-server runs with JetStream enabled"
    )


def cluster_replicas(nc: Client) -> int:
    """3 copies on a cluster of 3 or more nodes (as the config log), else 1."""
    known = {(url.hostname, url.port) for url in nc.servers}
    return 3 if len(known) >= 3 else 1


class KvLog(Lifecycle):
    """Ensure the stream, follow it into `on_record`, append with compare-and-set, and
    read a key's history. `caught_up` is set once every key's latest record present at
    start has been delivered."""

    def __init__(
        self,
        nc: Client,
        log: FilteringBoundLogger,
        on_record: Callable[[KvRecord, int], object],
        *,
        history: int,
        replicas: int,
        timeout_s: float,
    ) -> None:
        self.nc = nc
        self.log = log
        self.on_record = on_record
        self.depth = history
        self.replicas = replicas or cluster_replicas(nc)
        self.timeout_s = timeout_s
        self.js = nc.jetstream(timeout=timeout_s)
        self.caught_up = asyncio.Event()
        self.bad_records = 0

    def config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=subjects.KV_STREAM,
            subjects=[subjects.every(subjects.KV_LOG)],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_msgs_per_subject=self.depth,
            max_msg_size=MAX_RECORD,
            discard=api.DiscardPolicy.OLD,
            num_replicas=self.replicas,
            allow_direct=True,
            republish=api.RePublish(
                src=subjects.every(subjects.KV_LOG), dest=subjects.every(subjects.KV_CHANGES)
            ),
        )

    async def ensure(self) -> None:
        config = self.config()
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:  # exists with other limits: take ours
            await self.js.update_stream(config)

    async def start(self) -> None:
        info = await self.js.stream_info(subjects.KV_STREAM)
        sub = await self.js.subscribe(
            subjects.every(subjects.KV_LOG),
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            stream=subjects.KV_STREAM,
        )
        self.own(sub, drain=False)
        if not info.state.messages:
            self.caught_up.set()

    async def _on_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        try:
            self.on_record(_decode(msg.data), meta.sequence.stream)
        except Exception:  # one bad record must not stop the follower
            self.bad_records += 1
            self.log.exception("kv.record_failed", subject=msg.subject)
        if meta.num_pending == 0:
            self.caught_up.set()

    async def append(self, record: KvRecord, expected: int) -> int:
        """Store `record` if its key's last sequence is `expected` (0: none); its sequence.
        LostRaceError if another write came first."""
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(expected)}
        try:
            ack = await self.js.publish(
                subjects.kv_subject(subjects.KV_LOG, record.key),
                _encode(record),
                timeout=self.timeout_s,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise LostRaceError(f"key {record.key!r} changed since index {expected}") from None
            raise _unavailable(exc) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc
        return ack.seq

    async def last(self, key: str) -> tuple[KvRecord | None, int]:
        """The key's last record and its sequence, read from the stream (not the index)."""
        try:
            raw = await self.js.get_last_msg(
                subjects.KV_STREAM, subjects.kv_subject(subjects.KV_LOG, key)
            )
        except nats.js.errors.NotFoundError:
            return None, 0
        except (nats.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc
        return _decode(raw.data or b""), raw.seq or 0

    async def history(self, key: str) -> list[tuple[KvRecord, int]]:
        """The key's kept records, oldest first, with their sequences."""
        subject = subjects.kv_subject(subjects.KV_LOG, key)
        _, last = await self.last(key)
        if not last:
            return []
        out: list[tuple[KvRecord, int]] = []
        done = asyncio.Event()

        async def on_msg(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            with contextlib.suppress(msgspec.DecodeError):
                out.append((_decode(msg.data), seq))
            if seq >= last or msg.metadata.num_pending == 0:
                done.set()

        try:
            sub = await self.js.subscribe(
                subject, stream=subjects.KV_STREAM, cb=on_msg, ordered_consumer=True
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise _unavailable(exc) from exc
        try:
            await asyncio.wait_for(done.wait(), self.timeout_s)
        except TimeoutError as exc:
            raise _unavailable(exc) from None
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return out
