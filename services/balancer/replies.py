"""Resolve answers, encoded once per instance and strategy.

An Endpoint differs from one resolve to the next only in its pick token, so the JSON
around the token is kept per (member, strategy, panic) and a reply is three bytes
objects joined: building and encoding the Struct each time cost more than the pick.
The worker forgets a member's entries whenever the registry changes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from schemas.balancer import Endpoint

if TYPE_CHECKING:
    from services.balancer.members import Member

__all__ = ["ReplyCache"]

_encode = msgspec.json.Encoder().encode
# The pick field with a placeholder. Inside a string its quotes would be escaped; the only
# object that could hold the same pair, metadata, comes before pick: so its last match.
_MARK = "\x00"
_FIELD = b'"pick":"\\u0000"'


class ReplyCache:
    def __init__(self) -> None:
        self._parts: dict[Member, dict[tuple[str, bool], tuple[bytes, bytes]]] = {}

    def endpoint(self, member: Member, strategy: str, *, panic: bool, pick: str) -> bytes:
        """The encoded Endpoint naming `member`, with `pick` as its pick token."""
        mine = self._parts.get(member)
        if mine is None:
            mine = self._parts[member] = {}
        parts = mine.get((strategy, panic))
        if parts is None:
            parts = mine[strategy, panic] = _split(member, strategy, panic=panic)
        head, tail = parts
        return head + pick.encode() + tail

    def forget(self, member: Member | None) -> None:
        """Drop what was encoded for `member`: its address, weight or metadata changed."""
        if member is not None:
            self._parts.pop(member, None)


def _split(member: Member, strategy: str, *, panic: bool) -> tuple[bytes, bytes]:
    whole = _encode(
        Endpoint(
            instance_id=member.id,
            host=member.host,
            port=member.port,
            zone=member.zone,
            metadata=member.metadata,
            strategy=strategy,
            panic=panic,
            pick=_MARK,
            version=member.version,
            weight=member.weight,
        )
    )
    head, _, tail = whole.rpartition(_FIELD)
    return head + b'"pick":"', b'"' + tail
