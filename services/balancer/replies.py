"""Resolve answers, encoded once per instance and strategy, and counted as they are given.

An Endpoint differs from one resolve to the next only in its pick token, so the JSON
around the token is kept per (member, strategy, panic) and a reply is three bytes
objects joined: building and encoding the Struct each time cost more than the pick.
Each answer also counts how often it was given: those are the pick counts the balancer
publishes, kept where the resolve path looks anyway (a Counter keyed by a fresh tuple
cost a tenth of a resolve).
The worker forgets a member's entries whenever the registry changes it.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import msgspec

from schemas.balancer import Endpoint

if TYPE_CHECKING:
    from services.balancer.members import Member

__all__ = ["Answer", "ReplyCache"]

_encode = msgspec.json.Encoder().encode
# The pick field with a placeholder. Inside a string its quotes would be escaped; the only
# object that could hold the same pair, metadata, comes before pick: so its last match.
_MARK = "\x00"
_FIELD = b'"pick":"\\u0000"'


class Answer:
    """One (service, member, strategy, panic)'s Endpoint, split around its pick token."""

    __slots__ = ("count", "head", "member", "service", "strategy", "tail")

    def __init__(self, service: str, member: Member, strategy: str, *, panic: bool) -> None:
        self.service = service
        self.member = member
        self.strategy = strategy
        self.head, self.tail = _split(member, strategy, panic=panic)
        self.count = 0  # given since the counts were last taken


class ReplyCache:
    def __init__(self) -> None:
        # member -> its answers by strategy: (without panic, with panic)
        self._answers: dict[Member, tuple[dict[str, Answer], dict[str, Answer]]] = {}
        self._given: list[Answer] = []  # those counted since the last take(), once each

    def endpoint(
        self, service: str, member: Member, strategy: str, panic: bool, pick: str
    ) -> bytes:
        """The encoded Endpoint naming `member`, with `pick` as its pick token; counted.

        Positional: keywords cost the resolve path more than the lookups.
        """
        mine = self._answers.get(member)
        if mine is None:
            mine = self._answers[member] = ({}, {})
        answer = mine[panic].get(strategy)
        if answer is None:
            answer = mine[panic][strategy] = Answer(service, member, strategy, panic=panic)
        if not answer.count:
            self._given.append(answer)
        answer.count += 1
        return answer.head + pick.encode() + answer.tail

    def take(self) -> collections.Counter[tuple[str, Member, str]]:
        """The answers given per (service, member, strategy) since the last take."""
        given, self._given = self._given, []
        counts: collections.Counter[tuple[str, Member, str]] = collections.Counter()
        for answer in given:
            counts[answer.service, answer.member, answer.strategy] += answer.count
            answer.count = 0
        return counts

    def forget(self, member: Member | None) -> None:
        """Drop what was encoded for `member`: its address, weight or metadata changed.
        What it was given so far stays counted until the next take."""
        if member is not None:
            self._answers.pop(member, None)


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
