"""The balancer's encoded-once resolve answers must be byte-for-byte what encoding says."""

from __future__ import annotations

import msgspec
import pytest
from builders import instance

from schemas.balancer import Endpoint
from services.balancer.members import Member
from services.balancer.replies import ReplyCache


def encoded(member: Member, strategy: str, token: str, *, panic: bool = False) -> bytes:
    return msgspec.json.encode(
        Endpoint(
            instance_id=member.id,
            host=member.host,
            port=member.port,
            zone=member.zone,
            metadata=member.metadata,
            strategy=strategy,
            panic=panic,
            pick=token,
            version=member.version,
            weight=member.weight,
        )
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"max_inflight": "8", "az": "eu-1"},
        # values that look like the placeholder or the pick field must not confuse it
        {"x": "\x00", "y": '"pick":"\x00"', "pick": "\x00"},
    ],
)
@pytest.mark.parametrize("panic", [False, True])
def test_reply_is_the_encoded_endpoint(metadata: dict[str, str], *, panic: bool) -> None:
    member = Member(instance("a", weight=30, zone="z1", metadata=metadata))
    cache = ReplyCache()
    for token in ("n1.1", "n1.2", "abcdef01.123456789"):
        reply = cache.endpoint("api", member, "least_connections", panic, token)
        assert reply == encoded(member, "least_connections", token, panic=panic)
        assert msgspec.json.decode(reply, type=Endpoint).pick == token


def test_strategies_are_kept_apart() -> None:
    member = Member(instance("a"))
    cache = ReplyCache()
    rr = cache.endpoint("api", member, "round_robin", panic=False, pick="t")
    lc = cache.endpoint("api", member, "least_connections", panic=False, pick="t")
    assert msgspec.json.decode(rr, type=Endpoint).strategy == "round_robin"
    assert msgspec.json.decode(lc, type=Endpoint).strategy == "least_connections"


def test_a_changed_member_is_encoded_anew_once_forgotten() -> None:
    member = Member(instance("a", weight=10))
    cache = ReplyCache()
    cache.endpoint("api", member, "weighted", panic=False, pick="t")
    member.update(instance("a", weight=70, metadata={"v": "2"}))
    cache.forget(member)
    reply = msgspec.json.decode(
        cache.endpoint("api", member, "weighted", panic=False, pick="t"), type=Endpoint
    )
    assert (reply.weight, reply.metadata) == (70, {"v": "2"})


def test_answers_are_counted_per_service_member_and_strategy_until_taken() -> None:
    a, b = Member(instance("a")), Member(instance("b"))
    cache = ReplyCache()
    for member, strategy, panic in [
        (a, "weighted", False),
        (a, "weighted", True),  # panic or not, the same pick count
        (a, "random", False),
        (b, "weighted", False),
    ]:
        cache.endpoint("api", member, strategy, panic, "t")
    cache.forget(a)  # a changed: its answers are encoded anew, what it was given still counts
    cache.endpoint("api", a, "weighted", panic=False, pick="")
    assert cache.take() == {
        ("api", a, "weighted"): 3,
        ("api", a, "random"): 1,
        ("api", b, "weighted"): 1,
    }
    assert cache.take() == {}
    cache.endpoint("api", b, "weighted", panic=False, pick="t")
    assert cache.take() == {("api", b, "weighted"): 1}
