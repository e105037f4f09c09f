"""The console's config-center page: what Consul's KV API on the gateway does not carry.

    GET  /v1/ui/kv/history/{key}    the key's revisions, newest first, each with its diff
    POST /v1/ui/kv/rollback/{key}   {to_index, reason?}: store a revision's value again

Browsing, reading and writing a key go through the gateway's Consul KV routes
(`/v1/kv/{key}?keys&separator=/`, `?raw`, `PUT ?cas=`), as any Consul client's; these two
go through the same object (services/gateway/http/consul_kv.py), so the token's rights
and the actor recorded are the same as a PUT's.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
from aiohttp import web

from schemas.errors import explain
from schemas.kv import Index
from services.errors import BadRequest
from services.gateway.http.bodies import body_of
from services.gateway.http.replies import json

if TYPE_CHECKING:
    from schemas.kv import KvEntry, KvHistory
    from services.gateway.http.consul_kv import ConsulKv

__all__ = ["ConsoleKv", "revisions"]

DIFF_CONTEXT: Final = 2  # lines of context around each change, as `diff -U2`
MAX_DIFF_LINES: Final = 400  # a huge value's diff is cut, saying so


class Back(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to_index: Index
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = ""


def _text(value: bytes) -> str | None:
    """The value as text, or None when it is not UTF-8 (shown as its size only)."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _diff(before: str | None, after: str | None) -> list[str]:
    if before is None or after is None:
        return [] if before == after else ["(not text: compare the sizes)"]
    lines = list(
        difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=DIFF_CONTEXT)
    )[2:]  # without the ---/+++ header: the rows say which revisions
    if len(lines) > MAX_DIFF_LINES:
        cut = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"... {cut} more lines"]
    return lines


def revisions(history: KvHistory) -> list[dict[str, Any]]:
    """Every kept revision, newest first, with who, why, when and the diff of its value
    against the revision before (a delete against nothing; the oldest kept against empty)."""
    rows: list[dict[str, Any]] = []
    before: str | None = ""
    for entry in history.revisions:
        text = _text(entry.value) if entry.op == "put" else ""
        rows.append(_row(entry, text, _diff(before, text)))
        before = text
    rows.reverse()
    return rows


def _row(entry: KvEntry, text: str | None, diff: list[str]) -> dict[str, Any]:
    return {
        "index": entry.modify_index,
        "op": entry.op,
        "actor": entry.actor,
        "reason": entry.reason,
        "at": entry.at.isoformat(timespec="seconds") if entry.at else None,
        "restored": entry.restored,
        "flags": entry.flags,
        "size": len(entry.value),
        "value": text,  # None: not UTF-8 text
        "diff": diff,
    }


class ConsoleKv:
    def __init__(self, kv: ConsulKv) -> None:
        self.kv = kv

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/ui/kv/history/{key:.*}", self.history),
            web.post("/v1/ui/kv/rollback/{key:.*}", self.rollback),
        ]

    async def history(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        found = await self.kv.history(request, key)
        return json({"key": key, "revisions": revisions(found)})

    async def rollback(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        raw = body_of(request) or b"{}"
        try:
            back = msgspec.json.decode(raw, type=Back)
        except msgspec.MsgspecError as exc:
            raise BadRequest(explain(exc, raw, "rollback")) from None
        written = await self.kv.rollback(request, key, back.to_index, back.reason)
        return json({"ok": written.ok, "index": written.index})
