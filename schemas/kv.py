"""Config center (kv) messages of the v1 wire contract: keys, values, history, rollback.

Keys follow Consul's KV: `/`-separated paths, values are bytes (base64 in JSON, as Consul
encodes them) of at most 512 KiB, with a 64-bit `flags` the writer chooses. Every stored
change has an index, the JetStream sequence it was stored at: a key's `modify_index`,
and the store's `index` (what Consul calls X-Consul-Index) never go backwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from msgspec import Meta, Struct

from schemas.fields import Actor, Reason

__all__ = [
    "MAX_LISTING",
    "MAX_RECORD",
    "MAX_VALUE",
    "KvDelete",
    "KvEntries",
    "KvEntry",
    "KvHistory",
    "KvHistoryQuery",
    "KvPut",
    "KvQuery",
    "KvRecord",
    "KvRollback",
    "KvWritten",
    "entry_of",
]

MAX_VALUE: Final = 512 * 1024  # Consul's limit on one value
# a record is a 512 KiB value in base64 (4/3) plus its key and audit fields: under the
# 1 MiB max_payload of nats-server, which is also what the stream takes (no limit of its own)
MAX_RECORD: Final = 1024 * 1024
# a prefix read is answered in pages of under one reply each; a reader stops past this
# total of values (a 413 naming it): 64 MiB, far past what a config center should serve
MAX_LISTING: Final = 64 * 1024 * 1024
Flags = Annotated[int, Meta(ge=0)]  # Consul: a uint64; checked by the worker
Index = Annotated[int, Meta(ge=0)]
Separator = Annotated[str, Meta(max_length=64)]
Cursor = Annotated[str, Meta(max_length=1024)]  # a key: at most 512 UTF-8 bytes
KvOp = Literal["put", "delete", "rollback"]


class KvRecord(Struct, frozen=True, kw_only=True, gc=False):
    """One stored change of a key, as JetStream keeps it and republishes it on
    `kv.v1.changes.{key}`; its index is the message's `Nats-Sequence` header."""

    key: str
    op: KvOp
    value: bytes = b""
    flags: Flags = 0
    # the index of the write that created the key; 0: this one did
    create_index: Index = 0
    actor: Actor
    reason: Reason = ""
    at: datetime
    # a rollback's source: the index whose value and flags it restored
    restored: Index | None = None


class KvEntry(Struct, frozen=True, kw_only=True, gc=False):
    """A key's value now (a read), or one of its revisions (history)."""

    key: str
    value: bytes = b""
    flags: Flags = 0
    create_index: Index = 0
    modify_index: Index = 0
    lock_index: Index = 0  # Baton has no locks: always 0
    session: str = ""  # Baton has no sessions: always ""
    op: KvOp = "put"
    actor: str = ""
    reason: str = ""
    at: datetime | None = None
    restored: Index | None = None


class KvQuery(Struct, frozen=True, kw_only=True, gc=False):
    """A read of the key in the subject; with `recurse`, of every key starting with it."""

    recurse: bool = False
    # names only (Consul's ?keys): with a separator, keys are cut after its first
    # occurrence past the prefix and listed once (a folder view)
    keys: bool = False
    separator: Separator = ""
    # with recurse or keys: the page starts after this (the last reply's `next_after`)
    after: Cursor = ""
    # answer only once this replica has applied every record the store held when asked
    consistent: bool = False


class KvEntries(Struct, frozen=True, kw_only=True, gc=False):
    """What a read found: the entries (none: absent), or their names for `keys`; `index`
    is what a blocking read waits past (X-Consul-Index): the newest change under the
    key or prefix, or the store's index when nothing is there."""

    index: Index
    store_index: Index = 0  # the store's newest change anywhere
    entries: list[KvEntry] = []
    keys: list[str] = []
    # with recurse or keys: more follow; ask again with `after` set to this
    next_after: str = ""


class KvPut(Struct, frozen=True, kw_only=True, gc=False):
    """Store `value` under the key in the subject."""

    value: bytes = b""
    flags: Flags = 0
    # compare-and-set: store only if the key's modify_index is this (0: only if absent)
    cas: Index | None = None
    actor: Actor
    reason: Reason = ""


class KvDelete(Struct, frozen=True, kw_only=True, gc=False):
    """Delete the key in the subject (or, with `recurse`, every key starting with it)."""

    recurse: bool = False
    cas: Index | None = None  # delete only if the key's modify_index is this
    actor: Actor
    reason: Reason = ""


class KvWritten(Struct, frozen=True, kw_only=True, gc=False):
    """A write's outcome: `ok` false when its compare-and-set found another index."""

    ok: bool
    index: Index  # the store's index after the write
    entry: KvEntry | None = None  # what a put or rollback stored
    deleted: Index = 0  # how many keys a delete removed


class KvHistoryQuery(Struct, frozen=True, kw_only=True, gc=False):
    limit: Annotated[int, Meta(ge=0, le=100_000)] = 0  # the newest this many; 0: all kept


class KvHistory(Struct, frozen=True, kw_only=True, gc=False):
    """A key's kept revisions, oldest first (deletes included, as op `delete`)."""

    key: str
    revisions: list[KvEntry] = []


class KvRollback(Struct, frozen=True, kw_only=True, gc=False):
    """Store again the value and flags the key had at `to_index` (a revision's
    modify_index), as a new revision."""

    to_index: Index
    cas: Index | None = None
    actor: Actor
    reason: Reason = ""


def entry_of(record: KvRecord, seq: int) -> KvEntry:
    """A stored record (at stream sequence `seq`) as the entry it made the key."""
    return KvEntry(
        key=record.key,
        value=record.value,
        flags=record.flags,
        create_index=record.create_index or seq,
        modify_index=seq,
        op=record.op,
        actor=record.actor,
        reason=record.reason,
        at=record.at,
        restored=record.restored,
    )
