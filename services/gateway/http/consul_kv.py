"""Consul's KV API at `/v1/kv/{key}`, carried out by the config center (services/kv).

Reads and writes go to the kv worker over NATS (`kv.v1.get|put|delete.{key}`); values
are base64 in JSON as Consul encodes them, or the raw bytes with `?raw`. Blocking queries
(`?index=N&wait=D`) park on the changes the store republishes (`kv.v1.changes.>`): each
parked query waits for a change to its key, or under its prefix, and for nothing else.
Sessions, locks (`?acquire`, `?release`) and transactions are not Baton's: 501.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from schemas import subjects
from schemas.kv import (
    MAX_RECORD,
    MAX_VALUE,
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
)
from services.errors import BadRequest, TooLarge
from services.gateway.http.blocking import blocking_params, jittered
from services.gateway.http.bodies import UnsupportedEncoding
from services.gateway.http.consul_api import token_of
from services.gateway.http.params import flag, parse_index, parse_uint
from services.gateway.http.replies import json
from services.kv_pages import read_prefix
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from services.bus import Bus
    from services.gateway.http.tokens import Access

__all__ = ["ConsulKv", "KvWaiters"]

READ_CHUNK: Final = 64 * 1024
CATCH_UP: Final = Backoff(base_s=0.002, cap_s=0.05)  # re-reads of a replica that lags
CATCH_UP_S: Final = 1.0
_LOCKS: Final = (
    "Baton has no sessions or locks: ?acquire and ?release are not supported; use ?cas "
    "(compare-and-set on ModifyIndex) to write a key only if it has not changed"
)


def _cas(query: Any) -> int | None:
    raw = query.get("cas")
    return None if raw is None else parse_index(raw, "cas")


def _flags(query: Any) -> int:
    raw = query.get("flags")
    means = "a uint64 stored with the value"
    return 0 if raw is None else parse_uint(raw, "flags", maximum=2**64 - 1, means=means)


def consul_entry(entry: KvEntry) -> dict[str, Any]:
    """A Consul `KVPair`: Value base64 (null when empty), Session only when held."""
    pair: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": base64.b64encode(entry.value).decode() if entry.value else None,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }
    if entry.session:
        pair["Session"] = entry.session
    return pair


class KvWaiters(Lifecycle):
    """Parked blocking queries, woken by a change to their key or under their prefix.

    A child of the gateway worker: it follows every change the store republishes
    (`kv.v1.changes.>`) from its start to its close.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._parked: set[tuple[str, bool, asyncio.Future[None]]] = set()

    async def start(self) -> None:
        await self.owned(self.bus.serve)(
            subjects.every(subjects.KV_CHANGES),
            KvRecord,
            self.on_change,
            answer=False,
            max_payload=MAX_RECORD,
        )

    def on_change(self, subject: str, record: KvRecord) -> None:
        del subject
        key = record.key
        for prefix, recurse, future in list(self._parked):
            if not future.done() and (key == prefix or (recurse and key.startswith(prefix))):
                future.set_result(None)

    def park(self, key: str, *, recurse: bool) -> tuple[str, bool, asyncio.Future[None]]:
        """Park before reading, so a change between the read and the wait is not missed."""
        waiter = (key, recurse, asyncio.get_running_loop().create_future())
        self._parked.add(waiter)
        return waiter

    def leave(self, waiter: tuple[str, bool, asyncio.Future[None]]) -> None:
        self._parked.discard(waiter)
        waiter[2].cancel()

    def __len__(self) -> int:
        return len(self._parked)


class ConsulKv:
    def __init__(  # its dependencies, passed in
        self,
        bus: Bus,
        waiters: KvWaiters,
        access: Access,
        *,
        datacenter: str,
        timeout_s: float,
        closing: asyncio.Event,
    ) -> None:
        self.bus = bus
        self.waiters = waiters
        self.access = access
        self.datacenter = datacenter
        self.timeout_s = timeout_s
        self.closing = closing

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/kv/{key:.*}", self.get),
            web.put("/v1/kv/{key:.*}", self.put),
            web.delete("/v1/kv/{key:.*}", self.delete),
        ]

    # -- rules ------------------------------------------------------------------------------
    def _headers(self, index: int) -> dict[str, str]:
        return {
            "X-Consul-Index": str(max(index, 1)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
        }

    def _rules(self, request: web.Request) -> str:
        query = request.query
        dc = query.get("dc")
        if dc and dc != self.datacenter:
            raise BadRequest(f'No path to datacenter "{dc}": this gateway is "{self.datacenter}"')
        if "acquire" in query or "release" in query:
            raise web.HTTPNotImplemented(text=_LOCKS + "\n")
        return request.match_info["key"]

    def _actor(self, request: web.Request) -> tuple[str, str]:
        actor = (
            request.headers.get("X-Baton-Actor")
            or self.access.name_of(token_of(request))  # the token's `name=`, as the console
            or f"http {request.remote or 'unknown'}"
        )
        return actor[:128], request.headers.get("X-Baton-Reason", "")[:1024]

    async def _read(self, key: str, query: KvQuery) -> KvEntries:
        if query.recurse or query.keys:  # a prefix may span several replies
            return await read_prefix(self.bus, key, query, timeout=self.timeout_s)
        subject = subjects.kv_subject(subjects.KV_GET, key)
        return await self.bus.request(subject, query, KvEntries, timeout=self.timeout_s)

    # -- GET ---------------------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        key = self._rules(request)
        query = request.query
        keys = "keys" in query
        recurse = keys or flag(query, "recurse")
        self.access.check_kv(token_of(request), request.remote, "read", key, recurse=recurse)
        asked = KvQuery(
            recurse=recurse,
            keys=keys,
            separator=query.get("separator", ""),
            consistent="consistent" in query,
        )
        index, wait_s = blocking_params(query)
        found = await self._blocking(key, asked, index, wait_s)
        headers = self._headers(found.index)
        if not (found.entries or found.keys):
            return web.Response(status=404, headers=headers)
        if keys:
            return json(found.keys, headers=headers)
        if flag(query, "raw") and not recurse:
            return web.Response(
                body=found.entries[0].value,
                headers=headers,
                content_type="application/octet-stream",
            )
        return json([consul_entry(entry) for entry in found.entries], headers=headers)

    async def _blocking(
        self, key: str, query: KvQuery, index: int | None, wait_s: float
    ) -> KvEntries:
        """The read, once its index passes `index` (Consul's blocking query rules, as in
        blocking.py), the wait is over, or the gateway stops."""
        if not index:
            return await self._read(key, query)
        waiter = self.waiters.park(key, recurse=query.recurse)
        try:
            found = await self._read(key, query)
            if found.index > index or index > found.store_index or self.closing.is_set():
                return found  # news, or an index ahead of the store: the client resets
            stopping = asyncio.ensure_future(self.closing.wait())
            try:
                either: set[asyncio.Future[Any]] = {waiter[2], stopping}
                await asyncio.wait(
                    either, timeout=jittered(wait_s), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
        finally:
            self.waiters.leave(waiter)
        found = await self._read(key, query)
        if waiter[2].done() and not waiter[2].cancelled():
            found = await self._caught_up(key, query, index, found)
        return found

    async def _caught_up(self, key: str, query: KvQuery, index: int, found: KvEntries) -> KvEntries:
        """Woken by a change, the read may have reached a kv replica that has not applied
        it yet (replicas follow the stream apart): read again, a few ms apart, until the
        index passes `index` (or CATCH_UP_S passes: answer what there is)."""
        retry = CATCH_UP.retry(deadline_s=CATCH_UP_S)
        while found.index <= index and await retry.wait():
            found = await self._read(key, query)
        return found

    # -- PUT and DELETE --------------------------------------------------------------------
    async def _body(self, request: web.Request) -> bytes:
        """The raw body as sent, at most 512 KiB: read here, past the app's 64 KiB limit
        (http/bodies.py leaves /v1/kv/ alone: a value is bytes, not JSON)."""
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedEncoding(
                f"Content-Encoding {encoding[:40]!r} is not taken for a value: a key holds "
                "the bytes sent; send them without Content-Encoding"
            )
        if request.content_length is not None and request.content_length > MAX_VALUE:
            raise _too_large(request.content_length)
        body = bytearray()
        while chunk := await request.content.read(READ_CHUNK):
            body += chunk
            if len(body) > MAX_VALUE:
                raise _too_large(len(body))
        return bytes(body)

    async def put(self, request: web.Request) -> web.Response:
        key = self._rules(request)
        self.access.check_kv(token_of(request), request.remote, "write", key, recurse=False)
        flags, cas = _flags(request.query), _cas(request.query)
        value = await self._body(request)
        actor, reason = self._actor(request)
        put = KvPut(value=value, flags=flags, cas=cas, actor=actor, reason=reason)
        subject = subjects.kv_subject(subjects.KV_PUT, key)
        written = await self.bus.request(subject, put, KvWritten, timeout=self.timeout_s)
        return json(written.ok, headers=self._headers(written.index))

    async def delete(self, request: web.Request) -> web.Response:
        key = self._rules(request)
        recurse = flag(request.query, "recurse")
        token = token_of(request)
        self.access.check_kv(token, request.remote, "write", key, recurse=recurse)
        cas = _cas(request.query)
        actor, reason = self._actor(request)
        delete = KvDelete(recurse=recurse, cas=cas, actor=actor, reason=reason)
        subject = subjects.kv_subject(subjects.KV_DELETE, key)
        written = await self.bus.request(subject, delete, KvWritten, timeout=self.timeout_s)
        return json(written.ok, headers=self._headers(written.index))

    # -- Baton's own: a key's history and its rollback (the console's, not Consul's) ---------
    async def history(self, request: web.Request, key: str) -> KvHistory:
        """The key's kept revisions, oldest first, if the token may read it."""
        self.access.check_kv(token_of(request), request.remote, "read", key, recurse=False)
        subject = subjects.kv_subject(subjects.KV_HISTORY, key)
        return await self.bus.request(subject, KvHistoryQuery(), KvHistory, timeout=self.timeout_s)

    async def rollback(
        self, request: web.Request, key: str, to_index: int, reason: str = ""
    ) -> KvWritten:
        """Store again what the key held at `to_index`, if the token may write it; the
        actor as a PUT's (X-Baton-Actor, else the token's name)."""
        self.access.check_kv(token_of(request), request.remote, "write", key, recurse=False)
        actor, said = self._actor(request)
        back = KvRollback(to_index=to_index, actor=actor, reason=reason or said)
        subject = subjects.kv_subject(subjects.KV_ROLLBACK, key)
        return await self.bus.request(subject, back, KvWritten, timeout=self.timeout_s)


def _too_large(size: int) -> TooLarge:
    return TooLarge(
        f"Value exceeds {MAX_VALUE} byte limit: the body is {size} bytes; keep large "
        "files elsewhere and store where they are"
    )
