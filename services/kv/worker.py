"""The config center: application configuration, versioned, audited, pushed.

Keys and values are stored in JetStream (services/kv/log.py), one subject per key, and
served from an index kept in memory by following the stream (services/kv/index.py).
Writes are compare-and-set on the key's last sequence, so replicas of this worker need
no lock: a write that loses a race re-reads the key and is tried again, or is answered
`ok: false` when it named the index it expected (Consul's `?cas`). Every write carries
who made it and why; a key's history is kept and any revision can be restored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Final

import msgspec
from msgspec import Meta, Struct

from schemas import subjects
from schemas.fields import utcnow
from schemas.kv import (
    MAX_RECORD,
    MAX_VALUE,
    KvDelete,
    KvEntries,
    KvEntry,
    KvHistory,
    KvHistoryQuery,
    KvOp,
    KvPut,
    KvQuery,
    KvRecord,
    KvRollback,
    KvWritten,
    entry_of,
)
from services.errors import BadRequest, TooLarge, Unavailable
from services.kv.applied import Applied
from services.kv.index import KeyIndex, folded, past_name
from services.kv.keys import check_key, check_prefix
from services.kv.log import KvLog, LostRace
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Iterator

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["KvSettings", "KvWorker", "names_page"]

MAX_FLAGS: Final = 2**64
REPLY_BYTES: Final = 900 * 1024  # a read's reply must fit NATS' 1 MiB max_payload
CAS_RETRY = Backoff(base_s=0.002, cap_s=0.1)  # between tries of a write that lost a race
_size = msgspec.json.Encoder().encode


class KvSettings(Struct, frozen=True, kw_only=True):
    """Environment: KV_<FIELD>, e.g. KV_HISTORY=100."""

    # revisions kept per key (older ones are dropped); deletes count as revisions
    history: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # JetStream replicas of the store; 0: 3 on a cluster of 3+ nodes, else 1
    replicas: Annotated[int, Meta(ge=0, le=5)] = 0
    # deadline of each store operation
    store_timeout_s: Annotated[float, Meta(gt=0)] = 5.0
    # tries of a write that keeps losing races with concurrent ones before a 503
    retries: Annotated[int, Meta(ge=1)] = 20
    # the first wait between attempts to reach JetStream at start (growing to 10 s)
    retry_s: Annotated[float, Meta(gt=0)] = 1.0
    # at start, wait at most this long for the store's keys before serving
    load_wait_s: Annotated[float, Meta(ge=0)] = 30.0
    # a consistent read waits at most this long for this replica to catch up, then a 503
    consistent_wait_s: Annotated[float, Meta(gt=0)] = 2.0


class _Write(Struct, frozen=True, kw_only=True, gc=False):
    """One record to store for a key, before its sequence and create index are known."""

    key: str
    op: KvOp
    value: bytes = b""
    flags: int = 0
    actor: str
    reason: str
    restored: int | None = None


def _key(subject: str, prefix: str) -> str:
    return subjects.kv_key_from(subject, prefix)


def names_page(names: Iterator[str], separator: str, budget: int) -> tuple[list[str], str]:
    """The names that fit `budget` bytes of JSON (at least one), and where the next page
    starts ("": none left)."""
    out: list[str] = []
    size = 0
    for name in names:
        cost = len(_size(name)) + 1
        if out and size + cost > budget:
            return out, past_name(out[-1], separator)
        out.append(name)
        size += cost
    return out, ""


class KvWorker(Lifecycle):
    def __init__(self, bus: Bus, settings: KvSettings, log: FilteringBoundLogger) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.index = KeyIndex()
        self.applied = Applied()
        self.store = KvLog(
            bus,
            log,
            self.index.apply,
            self.applied.advance,
            history=settings.history,
            replicas=settings.replicas,
            timeout_s=settings.store_timeout_s,
        )

    async def start(self) -> None:
        base = self.settings.retry_s
        retry = Backoff(base_s=base, cap_s=max(base, 10.0)).retry()
        while True:  # without JetStream nothing can be stored: wait for it
            try:
                await self.store.ensure()
                break
            except Exception as exc:  # noqa: BLE001  # any failure here means "not yet"
                self.log.warning("kv.store_unavailable", error=repr(exc), attempt=retry.attempts)
                await retry.wait()
        await self.enter(self.store)
        await self._loaded()
        serve = self.owned(self.bus.serve)
        q = "kv"
        every = subjects.every
        limit = MAX_RECORD
        await serve(every(subjects.KV_GET), KvQuery, self._on_get, queue=q)
        await serve(every(subjects.KV_PUT), KvPut, self._on_put, queue=q, max_payload=limit)
        await serve(every(subjects.KV_DELETE), KvDelete, self._on_delete, queue=q)
        await serve(every(subjects.KV_HISTORY), KvHistoryQuery, self._on_history, queue=q)
        await serve(every(subjects.KV_ROLLBACK), KvRollback, self._on_rollback, queue=q)
        self.log.info("kv.ready", keys=len(self.index), index=self.index.index)

    async def _loaded(self) -> None:
        try:
            await asyncio.wait_for(self.store.caught_up.wait(), self.settings.load_wait_s)
        except TimeoutError:
            self.log.warning("kv.not_loaded", waited_s=self.settings.load_wait_s)

    # -- reads ----------------------------------------------------------------------------
    async def _consistent(self) -> None:
        """Wait until this replica has followed every record the stream holds now."""
        newest = await self.store.newest()
        wait_s = self.settings.consistent_wait_s
        if not await self.applied.reach(newest, wait_s):
            self.log.warning(
                "kv.consistent_lagging", newest=newest, followed=self.applied.seq, waited_s=wait_s
            )
            raise Unavailable(
                f"this kv replica has followed the store to index {self.applied.seq}, not to "
                f"its newest ({newest}), after {wait_s} s: retry, or read without ?consistent"
            )

    async def _on_get(self, subject: str, query: KvQuery) -> KvEntries:
        key = _key(subject, subjects.KV_GET)
        if query.consistent:
            await self._consistent()
        index = self.index
        if not (query.recurse or query.keys):
            check_key(key)
            found = index.get(key)
            return KvEntries(
                index=index.index_of(key, recurse=False),
                store_index=index.index,
                entries=[found] if found else [],
            )
        check_prefix(key)
        at = index.index_of(key, recurse=True)
        if query.keys:
            keys, more = self._names(key, query.after, query.separator)
            return KvEntries(index=at, store_index=index.index, keys=keys, next_after=more)
        entries, more = self._page(key, query.after)
        return KvEntries(index=at, store_index=index.index, entries=entries, next_after=more)

    def _names(self, prefix: str, after: str, separator: str) -> tuple[list[str], str]:
        keys = (entry.key for entry in self.index.scan(prefix, after))
        return names_page(folded(keys, prefix, separator), separator, REPLY_BYTES)

    def _page(self, prefix: str, after: str) -> tuple[list[KvEntry], str]:
        """The entries under `prefix` past `after` that fit one reply (at least one: a
        512 KiB value is under REPLY_BYTES in base64), and the key to continue after ("":
        none left)."""
        entries: list[KvEntry] = []
        size = 0
        for entry in self.index.scan(prefix, after):
            cost = len(_size(entry)) + 1
            if entries and size + cost > REPLY_BYTES:
                return entries, entries[-1].key
            entries.append(entry)
            size += cost
        return entries, ""

    async def _on_history(self, subject: str, query: KvHistoryQuery) -> KvHistory:
        key = check_key(_key(subject, subjects.KV_HISTORY))
        revisions = [entry_of(record, seq) for record, seq in await self.store.history(key)]
        if query.limit:
            revisions = revisions[-query.limit :]
        size, keep = 0, len(revisions)
        while keep and size + len(_size(revisions[keep - 1])) <= REPLY_BYTES:
            size += len(_size(revisions[keep - 1]))
            keep -= 1
        return KvHistory(key=key, revisions=revisions[keep:])

    # -- writes ---------------------------------------------------------------------------
    async def _on_put(self, subject: str, put: KvPut) -> KvWritten:
        key = check_key(_key(subject, subjects.KV_PUT))
        if len(put.value) > MAX_VALUE:
            raise TooLarge(
                f"the value of {key!r} is {len(put.value)} bytes; the limit is {MAX_VALUE} "
                "(512 KiB): keep large files elsewhere and store where they are"
            )
        write = _Write(
            key=key, op="put", value=put.value, flags=put.flags, actor=put.actor, reason=put.reason
        )
        if put.flags >= MAX_FLAGS:
            raise BadRequest(f"flags {put.flags} must be an integer 0..{MAX_FLAGS - 1} (a uint64)")
        return await self._write(write, put.cas)

    async def _on_rollback(self, subject: str, rollback: KvRollback) -> KvWritten:
        key = check_key(_key(subject, subjects.KV_ROLLBACK))
        kept = await self.store.history(key)
        found = [record for record, seq in kept if seq == rollback.to_index]
        if not found:
            have = ", ".join(str(seq) for _, seq in kept[-10:]) or "none"
            raise BadRequest(
                f"key {key!r} has no revision at index {rollback.to_index}; its newest kept "
                f"revisions are at {have} (kv.v1.history lists them)"
            )
        source = found[0]
        op: KvOp = "delete" if source.op == "delete" else "rollback"
        write = _Write(
            key=key,
            op=op,
            value=source.value,
            flags=source.flags,
            actor=rollback.actor,
            reason=rollback.reason,
            restored=rollback.to_index,
        )
        return await self._write(write, rollback.cas)

    async def _on_delete(self, subject: str, delete: KvDelete) -> KvWritten:
        key = _key(subject, subjects.KV_DELETE)
        if not delete.recurse:
            check_key(key)
            write = _Write(key=key, op="delete", actor=delete.actor, reason=delete.reason)
            return await self._write(write, delete.cas)
        check_prefix(key)
        if delete.cas is not None:
            raise BadRequest("cas applies to one key; a recursive delete takes none")
        deleted = 0
        for entry in list(self.index.scan(key)):
            write = _Write(key=entry.key, op="delete", actor=delete.actor, reason=delete.reason)
            done = await self._write(write, None)
            deleted += done.deleted
        return KvWritten(ok=True, index=self.index.index, deleted=deleted)

    async def _write(self, write: _Write, cas: int | None) -> KvWritten:
        """Store one record for `key`, compare-and-set on its last sequence.

        The index says what the key holds. Before answering from it that a `cas` does not
        match or that there is nothing to delete, and after a lost race, the stream itself
        is asked: another replica may have written, and this one's index not have it yet.
        """
        key, op = write.key, write.op
        retry = CAS_RETRY.retry()
        held = self.index.get(key)
        seq = self.index.last_seq(key)
        asked = False  # whether `held` came from the stream itself
        for attempt in range(self.settings.retries):
            if attempt > 1:
                await retry.wait()
            mismatch = cas is not None and cas != (held.modify_index if held else 0)
            nothing = op == "delete" and held is None
            if (mismatch or nothing) and not asked:
                held, seq = await self._from_stream(key)
                asked = True
                continue
            if mismatch:
                return KvWritten(ok=False, index=self.index.index)
            if nothing:
                return KvWritten(ok=True, index=self.index.index)  # nothing there: done
            record = KvRecord(
                key=key,
                op=op,
                value=write.value,
                flags=write.flags,
                create_index=held.create_index if held is not None and op != "delete" else 0,
                actor=write.actor,
                reason=write.reason,
                at=utcnow(),
                restored=write.restored,
            )
            try:
                stored = await self.store.append(record, seq)
            except LostRace:
                held, seq = await self._from_stream(key)
                asked = True
                continue
            entry = self.index.apply(record, stored) or entry_of(record, stored)
            self.log.info("kv.written", key=key, op=op, index=stored, actor=write.actor)
            if op == "delete":
                return KvWritten(ok=True, index=stored, deleted=1)
            return KvWritten(ok=True, index=stored, entry=entry)
        raise Unavailable(f"key {key!r} is being written by many clients at once; retry shortly")

    async def _from_stream(self, key: str) -> tuple[KvEntry | None, int]:
        """The key's live entry (None: absent or deleted) and last sequence, as stored."""
        last, seq = await self.store.last(key)
        return (entry_of(last, seq) if last is not None and last.op != "delete" else None), seq
