"""`KvClient`: read, write and watch the config center's keys (services/kv) over NATS.

```
kv = KvClient(nc, actor="deploy-bot")
await kv.put("web/db.url", b"postgres://db:5432/web", reason="new primary")
entry = await kv.get("web/db.url")           # a KvEntry, or None
async with kv.watch("web/") as changes:       # every change under web/, pushed
    async for entry in changes:               # op "delete" for a deleted key
        reload(entry.key, entry.value)
```

A watch is one wildcard subscription on `kv.v1.changes.<prefix>`, where the store
republishes each change as it stores it: told within milliseconds, no poll. With
`current=True` it first yields what is there now. After a reconnect (changes published
while away are not queued for a plain subscription) it reads the prefix again and yields
what changed meanwhile, deletes included, so a watcher ends up where the store is.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Self

import msgspec
import nats.errors
import structlog

from schemas import subjects
from schemas.kv import (
    KvDelete,
    KvEntries,
    KvEntry,
    KvHistory,
    KvHistoryQuery,
    KvPut,
    KvQuery,
    KvRecord,
    KvRollback,
    KvWritten,
    entry_of,
)
from services.bus import Bus
from services.errors import BadRequest
from services.kv_pages import read_prefix

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from structlog.typing import FilteringBoundLogger

__all__ = ["KvClient", "KvWatch"]

_decode_record = msgspec.json.Decoder(KvRecord).decode
_SEQUENCE = "Nats-Sequence"  # the republished record's stream sequence: its modify index


def _subject(prefix: str, key: str) -> str:
    try:
        return subjects.kv_subject(prefix, key)
    except subjects.InvalidNameError as exc:
        raise BadRequest(str(exc)) from None


def change_of(msg: Msg) -> KvEntry:
    """A republished record as the entry it made (a delete: op "delete", no value)."""
    seq = int((msg.headers or {}).get(_SEQUENCE, "0"))
    return entry_of(_decode_record(msg.data), seq)


class KvClient:
    """The config center's requests, raising from `services.errors` (BadRequest for a bad
    key, TooLarge over 512 KiB, NoResponders when no kv worker runs)."""

    def __init__(
        self,
        nc: Client,
        *,
        actor: str = "baton-sdk",
        timeout: float = 2.0,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.nc = nc
        self.actor = actor
        self.timeout = timeout
        self.log = log or structlog.get_logger()
        self._bus = Bus(nc, self.log)
        self._watches: set[KvWatch] = set()
        self._hooked = False

    async def _ask(self, prefix: str, key: str, msg: msgspec.Struct, reply: type[Any]) -> Any:
        return await self._bus.request(_subject(prefix, key), msg, reply, timeout=self.timeout)

    async def get(self, key: str) -> KvEntry | None:
        """The key's entry now, None if absent."""
        found: KvEntries = await self._ask(subjects.KV_GET, key, KvQuery(), KvEntries)
        return found.entries[0] if found.entries else None

    async def entries(self, prefix: str) -> KvEntries:
        """Every key starting with `prefix`, with the index a change would pass (read a page
        at a time; TooLarge past 64 MiB of values)."""
        return await read_prefix(self._bus, prefix, KvQuery(recurse=True), timeout=self.timeout)

    async def keys(self, prefix: str, separator: str = "") -> list[str]:
        query = KvQuery(keys=True, separator=separator)
        found = await read_prefix(self._bus, prefix, query, timeout=self.timeout)
        return found.keys

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        flags: int = 0,
        cas: int | None = None,
        reason: str = "",
    ) -> KvWritten:
        """Store `value`; with `cas`, only if the key's modify index is that (0: absent).
        `ok` is false when the compare-and-set found another index."""
        data = value.encode() if isinstance(value, str) else value
        put = KvPut(value=data, flags=flags, cas=cas, actor=self.actor, reason=reason)
        written: KvWritten = await self._ask(subjects.KV_PUT, key, put, KvWritten)
        return written

    async def delete(
        self, key: str, *, recurse: bool = False, cas: int | None = None, reason: str = ""
    ) -> KvWritten:
        delete = KvDelete(recurse=recurse, cas=cas, actor=self.actor, reason=reason)
        written: KvWritten = await self._ask(subjects.KV_DELETE, key, delete, KvWritten)
        return written

    async def history(self, key: str, *, limit: int = 0) -> list[KvEntry]:
        """The key's kept revisions, oldest first (deletes as op "delete")."""
        query = KvHistoryQuery(limit=limit)
        found: KvHistory = await self._ask(subjects.KV_HISTORY, key, query, KvHistory)
        return found.revisions

    async def rollback(
        self, key: str, to_index: int, *, cas: int | None = None, reason: str = ""
    ) -> KvWritten:
        """Store the revision at `to_index` again, as a new revision."""
        rollback = KvRollback(to_index=to_index, cas=cas, actor=self.actor, reason=reason)
        written: KvWritten = await self._ask(subjects.KV_ROLLBACK, key, rollback, KvWritten)
        return written

    def watch(
        self,
        prefix: str,
        callback: Callable[[KvEntry], Awaitable[None] | None] | None = None,
        *,
        current: bool = False,
    ) -> KvWatch:
        """Every change to a key starting with `prefix`: `async with kv.watch(p) as w:
        async for entry in w`, or with `callback`, called for each (`async with` it, or
        `await w.start()` and `await w.stop()`)."""
        self._hook_reconnects()
        return KvWatch(self, prefix, callback, current=current)

    def _hook_reconnects(self) -> None:
        """Tell the watches of a reconnect: changes published meanwhile were not queued.

        nats-py takes one reconnect callback, at connect; the SDK is handed a connected
        client, so it chains its own behind the caller's.
        """
        if self._hooked:
            return
        self._hooked = True
        nc = self.nc
        previous = nc._reconnected_cb  # noqa: SLF001  # nats-py's only reconnect hook

        async def reconnected() -> None:
            if previous is not None:
                await previous()
            for watch in list(self._watches):
                watch.resync()

        nc._reconnected_cb = reconnected  # noqa: SLF001


class KvWatch:
    """One prefix watch: an async iterator of entries, or a callback per entry."""

    def __init__(
        self,
        client: KvClient,
        prefix: str,
        callback: Callable[[KvEntry], Awaitable[None] | None] | None,
        *,
        current: bool,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.callback = callback
        self.current = current
        self.seen: dict[str, int] = {}  # key -> the modify index last yielded (live keys)
        self.resyncs = 0
        self._queue: asyncio.Queue[KvEntry] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Subscribe, then read what is there (a change in between is not lost)."""
        self._sub = await self.client.nc.subscribe(subjects.kv_watch(self.prefix), cb=self._on_msg)
        self.client._watches.add(self)  # noqa: SLF001  # the client's own registry
        await self._catch_up(emit=self.current)

    async def stop(self) -> None:
        self.client._watches.discard(self)  # noqa: SLF001
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None

    def resync(self) -> None:
        """Read the prefix again and yield what changed while away (after a reconnect)."""
        self.resyncs += 1
        task = asyncio.get_running_loop().create_task(self._catch_up(emit=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, *, emit: bool) -> None:
        async with self._lock:
            found = await self.client.entries(self.prefix)
            now = {entry.key: entry for entry in found.entries}
            if emit:
                for key in sorted(set(self.seen) - set(now)):
                    gone = KvEntry(key=key, op="delete", modify_index=found.index)
                    await self._deliver(gone)
            for entry in found.entries:
                if self.seen.get(entry.key, 0) < entry.modify_index:
                    if emit:
                        await self._deliver(entry)
                    else:
                        self.seen[entry.key] = entry.modify_index

    async def _on_msg(self, msg: Msg) -> None:
        try:
            entry = change_of(msg)
        except (msgspec.DecodeError, ValueError):
            self.client.log.warning("kv.change_undecodable", subject=msg.subject)
            return
        if not entry.key.startswith(self.prefix):
            return  # under the same segments, but not this prefix (`a/tr` vs `a/x`)
        if entry.op != "delete" and self.seen.get(entry.key, 0) >= entry.modify_index:
            return  # read already (the catch-up got there first)
        await self._deliver(entry)

    async def _deliver(self, entry: KvEntry) -> None:
        if entry.op == "delete":
            if self.seen.pop(entry.key, None) is None and entry.modify_index == 0:
                return
        else:
            self.seen[entry.key] = entry.modify_index
        if self.callback is None:
            self._queue.put_nowait(entry)
            return
        try:
            done = self.callback(entry)
            if done is not None:
                await done
        except Exception:  # a callback's bug must not end the watch
            self.client.log.exception("kv.watch_callback_failed", key=entry.key)

    def __aiter__(self) -> AsyncIterator[KvEntry]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[KvEntry]:
        while True:
            yield await self._queue.get()
