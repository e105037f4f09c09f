"""What a stream holds, as Baton reads it: one stored message, free of nats-py's types."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.api import RawStreamMsg

__all__ = ["Record", "from_delivered", "from_stored"]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One stored message: its subject, its stream sequence, its body and headers."""

    subject: str
    seq: int  # the stream's sequence: every record of a stream has its own, rising
    data: bytes
    headers: dict[str, str] | None = None
    time: datetime | None = None  # when the stream stored it (what get_last says)
    pending: int = 0  # delivered by a consumer: how many stored after it are still to come


def from_delivered(msg: Msg) -> Record:
    meta = msg.metadata
    return Record(
        subject=msg.subject,
        seq=meta.sequence.stream,
        data=msg.data,
        headers=msg.headers,
        pending=meta.num_pending,
    )


def from_stored(raw: RawStreamMsg) -> Record:
    return Record(
        subject=raw.subject or "",
        seq=raw.seq or 0,
        data=raw.data or b"",
        headers=raw.headers,
        time=raw.time,
    )
