"""Replication logic: the follower's outbox, the leader's events, snapshot pages and merge."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.registry import EventKind, Instance, InstanceEvent, Registration
from services.registry.leases import Change, LeaseTable
from services.registry.replication import (
    Barrier,
    EventHead,
    Outbox,
    apply_event,
    merge,
    records,
)

SVC = "orders"
WALL = 1_700_000_000.0


def reg(iid: str, *, port: int = 8080, ttl: float = 10.0) -> Registration:
    return Registration(instance_id=iid, host="10.0.0.1", port=port, ttl_s=ttl)


def table_with(*iids: str, at: float = 0.0) -> LeaseTable:
    table = LeaseTable()
    for iid in iids:
        table.register(SVC, reg(iid), at, WALL)
    return table


def event(kind: EventKind, iid: str, *, port: int = 8080, seq: int = 1) -> EventHead:
    """The leader's event, as a follower reads it off the wire."""
    now = datetime.now(UTC)
    inst = Instance(
        instance_id=iid, host="10.0.0.1", port=port, weight=100, zone="", version="",
        metadata={}, healthy=kind != "unhealthy", drained=False, inflight=0,
        registered_at=now, last_seen=now, ttl_s=10.0,
    )  # fmt: skip
    full = InstanceEvent(kind=kind, service=SVC, instance=inst, at=now, epoch="e", seq=seq)
    return msgspec.json.decode(msgspec.json.encode(full), type=EventHead)


def apply(table: LeaseTable, head: EventHead, mono: float) -> None:
    apply_event(table, head, head.instance_id, mono, WALL)


# -- outbox --------------------------------------------------------------------------------
def test_a_change_the_leader_announced_leaves_the_outbox() -> None:
    table = table_with("a", "b")
    box = Outbox(margin=0.25, slack=2.0)
    box.hold(Change("registered", table.get(SVC, "a")), now=1.0)  # type: ignore[arg-type]
    box.hold(Change("registered", table.get(SVC, "b")), now=1.0)  # type: ignore[arg-type]
    box.covered(SVC, "a")
    assert [c.lease.instance_id for c in box.take()] == ["b"]
    assert len(box) == 0


def test_changes_older_than_the_leaders_last_sign_of_life_are_dropped() -> None:
    table = table_with("old", "new", "swept")
    box = Outbox(margin=0.25, slack=2.0)
    box.hold(Change("registered", table.get(SVC, "old")), now=1.0)  # type: ignore[arg-type]
    box.hold(Change("unhealthy", table.get(SVC, "swept")), now=1.0)  # type: ignore[arg-type]
    box.hold(Change("registered", table.get(SVC, "new")), now=1.9)  # type: ignore[arg-type]
    box.prune(alive_at=2.0)  # the leader was alive 1 s after "old": it handled it
    # "new" is too recent to be sure of; the leader sweeps behind its last proof, so a
    # sweep change gets `slack` more
    assert sorted(c.lease.instance_id for c in box.take()) == ["new", "swept"]


def test_one_entry_per_instance_with_its_latest_state() -> None:
    table = table_with("a")
    lease = table.get(SVC, "a")
    assert lease is not None
    box = Outbox(margin=0.25, slack=2.0)
    box.hold(Change("registered", lease), now=1.0)
    box.hold(Change("unhealthy", lease), now=2.0)
    assert [c.kind for c in box.take()] == ["unhealthy"]


# -- the leader's events on a follower ------------------------------------------------------
def test_a_follower_takes_the_leaders_sweep_decisions() -> None:
    table = table_with("a", "b")
    apply(table, event("unhealthy", "a"), 5.0)
    apply(table, event("expired", "b"), 5.0)
    lease = table.get(SVC, "a")
    assert lease is not None
    assert not lease.healthy
    assert table.unhealthy == 1
    assert table.get(SVC, "b") is None
    apply(table, event("healthy", "a"), 6.0)
    assert [iid for iid, held in table.services[SVC].items() if held.healthy] == ["a"]
    assert table.unhealthy == 0


def test_an_event_ahead_of_its_registration_adds_the_instance() -> None:
    table = LeaseTable()
    apply(table, event("registered", "early", port=9000), 1.0)
    lease = table.get(SVC, "early")
    assert lease is not None
    assert lease.port == 9000
    apply(table, event("unhealthy", "gone-already"), 1.0)
    assert table.get(SVC, "gone-already") is None  # no lease made up from a sweep event


# -- snapshot pages and merge --------------------------------------------------------------
def test_pages_cover_the_table_once_in_order() -> None:
    table = table_with(*(f"i{n:03}" for n in range(25)))
    table.register("billing", reg("x"), 0.0, WALL)
    seen: list[str] = []
    after = ""
    while True:
        page, after = records(table, after, 10, mono=3.0)
        seen += [f"{r.service}/{r.instance_id}" for r in page]
        if not after:
            break
    assert len(seen) == 26
    assert seen == sorted(seen)
    assert seen[0] == "billing/x"


def test_merge_takes_missing_and_fresher_leases_only() -> None:
    peer = table_with("a", "b", "c", at=9.0)  # heard 1 s before the page is read
    peer.register(SVC, reg("a", port=1111), 9.5, WALL)
    mine = table_with("b", at=19.8)  # heard here 0.2 s ago: fresher than the peer's 1 s
    page, _ = records(peer, "", 100, mono=10.0)
    taken = merge(mine, page, mono=20.0, gone={(SVC, "c")})  # "c" deregistered meanwhile
    assert taken == 1
    a = mine.get(SVC, "a")
    assert a is not None
    assert a.port == 1111
    assert a.seen == 19.5  # the page's age, on this replica's clock
    b = mine.get(SVC, "b")
    assert b is not None
    assert b.seen == 19.8
    assert mine.get(SVC, "c") is None


def test_merge_keeps_the_peers_health_and_deadlines() -> None:
    peer = table_with("a", at=0.0)
    peer.sweep(10.5)  # silent past its ttl at the peer: unhealthy
    page, _ = records(peer, "", 100, mono=10.5)
    mine = LeaseTable()
    merge(mine, page, mono=100.0, gone=set())
    lease = mine.get(SVC, "a")
    assert lease is not None
    assert not lease.healthy
    assert mine.unhealthy == 1
    assert [c.kind for c in mine.sweep(100.0 + 9.4)] == []
    assert [c.kind for c in mine.sweep(100.0 + 9.6)] == ["expired"]  # 2 x ttl after


# -- the barrier before removals -------------------------------------------------------------
def test_a_removal_waits_for_the_next_proof_and_its_service_waits_behind_it() -> None:
    table = table_with("a", "b")
    table.register("billing", reg("x"), 0.0, WALL)
    a, b, x = table.get(SVC, "a"), table.get(SVC, "b"), table.get("billing", "x")
    assert a is not None
    assert b is not None
    assert x is not None
    barrier = Barrier()
    gone = Change("deregistered", a)
    assert barrier.needs(gone)
    barrier.hold(gone, 1.0)
    after = Change("registered", b)
    assert barrier.needs(after)  # same service: in order, behind the removal
    barrier.hold(after, 1.3)
    assert not barrier.needs(Change("registered", x))  # another service goes at once
    assert barrier.release(proved=0.9) == []  # that write left before the removal
    assert barrier.release(proved=1.1) == [gone]
    assert len(barrier) == 1
    assert barrier.release(proved=1.5) == [after]
    assert len(barrier) == 0


def test_a_replica_that_stops_speaking_hands_what_waits_to_its_outbox() -> None:
    table = table_with("a")
    lease = table.get(SVC, "a")
    assert lease is not None
    barrier = Barrier()
    barrier.hold(Change("deregistered", lease), 1.0)
    assert [c.kind for c in barrier.take()] == ["deregistered"]
    assert barrier.release(proved=9.0) == []


def test_what_a_peer_holds_unannounced_is_held_by_the_replica_that_copies_it() -> None:
    """A follower answered registrations while nobody led; a replica that copies its
    table must be able to announce them if it, not the follower, wins the lease."""
    peer = table_with("a", "b", at=9.0)
    peer_box = Outbox(margin=0.7, slack=4.0)
    a = peer.get(SVC, "a")
    assert a is not None
    peer_box.hold(Change("registered", a), now=9.0)
    page, _ = records(peer, "", 100, mono=10.0, outbox=peer_box)
    assert [r.held for r in page] == ["registered", None]
    mine, box = LeaseTable(), Outbox(margin=0.7, slack=4.0)
    merge(mine, page, mono=50.0, gone=set(), outbox=box)
    assert [(c.kind, c.lease.instance_id) for c in box.take()] == [("registered", "a")]
