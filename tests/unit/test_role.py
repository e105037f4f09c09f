"""Role: a replica's state, and what each message or tick makes it do (no server)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from schemas.registry import EventKind, Instance, InstanceEvent, Registration
from services.registry.leases import Change, Lease, LeaseTable
from services.registry.replication import EventHead
from services.registry.role import CatchUp, Role

if TYPE_CHECKING:
    from collections.abc import Callable

L = 2.0  # lease seconds: a window of 1.6 s, a write every 0.2 s
SVC = "orders"


class Link:
    """The NATS connection, as the role probes it."""

    def __init__(self) -> None:
        self.up = True

    def __call__(self) -> bool:
        return self.up


def role(replica_id: str = "b", *, link: Link | None = None, settle_s: float = 20.0) -> Role:
    epochs = iter(f"epoch{n}" for n in range(100))
    return Role(
        replica_id,
        lease_s=L,
        settle_s=settle_s,
        started=0.0,
        linked=link or Link(),
        mint=lambda: next(epochs),
    )


def following(replica_id: str = "b", *, link: Link | None = None) -> Role:
    """Caught up, a presence write proved at t=0, a leader answering."""
    r = role(replica_id, link=link)
    r.catch_up()
    r.catch_up_ended(finished=True)
    assert r.presence_written(0.0) is None
    r.leader_answered("a", "e1", 5, 0.0)
    return r


def leading(replica_id: str = "b", *, link: Link | None = None) -> Role:
    r = following(replica_id, link=link)
    r.leader_silent()
    r.won(revision=7, sent=0.0)
    return r


def a_lease(iid: str = "i-1") -> Lease:
    table = LeaseTable()
    table.register(SVC, Registration(instance_id=iid, host="h", port=1), 0.0, 0.0)
    lease = table.get(SVC, iid)
    assert lease is not None
    return lease


def event(kind: EventKind, iid: str, *, epoch: str = "e1", seq: int = 6) -> EventHead:
    now = datetime.now(UTC)
    inst = Instance(
        instance_id=iid, host="h", port=1, weight=100, zone="", version="", metadata={},
        healthy=True, drained=False, inflight=0, registered_at=now, last_seen=now, ttl_s=10.0,
    )  # fmt: skip
    full = InstanceEvent(kind=kind, service=SVC, instance=inst, at=now, epoch=epoch, seq=seq)
    return msgspec.json.decode(msgspec.json.encode(full), type=EventHead)


# -- the five states -----------------------------------------------------------------------
def test_a_replica_starts_catching_up_and_answers_nothing() -> None:
    r = role()
    r.presence_written(0.0)
    assert r.state(0.1) == "catching_up"
    assert not r.answers(0.1)
    assert not r.lists(0.1)


def test_a_caught_up_replica_without_a_proof_of_quorum_is_cut_off() -> None:
    r = role()
    r.catch_up()
    r.catch_up_ended(finished=True)
    assert r.state(0.0) == "cut_off"  # no write has succeeded yet
    r.presence_written(0.0)
    assert r.state(1.0) == "deputy"  # nobody told it of a leader: it answers
    assert r.state(1.6) == "cut_off"  # the window passed without another proof


def test_a_follower_answers_only_while_no_leader_does_and_its_id_is_the_smallest() -> None:
    r = following("b")
    assert r.state(0.1) == "following"
    assert r.lists(0.1)
    assert not r.answers(0.1)
    r.leader_silent()  # the leader died: answers resume at once
    assert r.state(0.1) == "deputy"
    r.followers_found({"c", "d"})  # b is the smallest live follower
    assert r.state(0.1) == "deputy"
    assert r.answers(0.1)
    assert r.leader == ""
    r.followers_found({"a2", "c"})  # a live follower with a smaller id answers instead
    assert r.state(0.1) == "following"
    r.leader_answered("c", "e1", 9, 0.1)
    assert r.state(0.1) == "following"
    assert r.leader == "c"


def test_winning_the_lease_makes_it_lead_and_a_refusal_ends_that_at_once() -> None:
    r = leading("b")
    assert r.state(0.1) == "leading"
    assert (r.leader, r.publishes(0.1), r.answers(0.1)) == ("b", True, True)
    stepped = r.renewal_failed(0.2, taken=True, error="")
    assert stepped is not None
    assert stepped == (True, "lease taken")
    assert not r.publishes(0.2)
    assert r.leader == ""
    assert r.state(0.2) == "deputy"  # still in touch and first in line until a ping


def test_an_unreachable_quorum_ends_leading_only_when_the_window_is_gone() -> None:
    r = leading()
    assert r.renewal_failed(1.0, taken=False, error="timeout") is None  # try again
    assert r.state(1.0) == "leading"
    stepped = r.renewal_failed(1.7, taken=False, error="timeout")
    assert stepped is not None
    assert stepped.reason == "no renewal within the lease: timeout"
    assert r.state(1.7) == "cut_off"


def test_the_holder_falls_silent_between_writes_once_its_window_is_gone() -> None:
    r = leading()
    assert r.lease_check(1.5) is None
    assert not r.publishes(1.6)  # silent before anybody else can win, check or not
    stepped = r.lease_check(1.6)
    assert stepped is not None
    assert stepped.was_leading


def test_an_unlinked_replica_answers_nothing_whatever_its_lease_says() -> None:
    link = Link()
    r = leading(link=link)
    link.up = False
    assert r.state(0.1) == "cut_off"
    assert not r.answers(0.1)
    assert r.announce(Change("registered", a_lease()), 0.1) is None  # held, not sent


def test_a_replica_alone_leads_at_once_and_sweeps_up_to_now() -> None:
    r = role()
    r.run_alone()
    assert r.state(5.0) == "leading"
    assert r.epoch == "epoch0"
    assert r.horizon(5.0) == 5.0


def test_stepping_down_changes_nothing_for_a_follower() -> None:
    r = following()
    stepped = r.step_down("cut off")
    assert not stepped.was_leading
    assert r.leader == "a"


def _renewal(r: Role, rng: random.Random, now: float) -> None:
    if r.lease.revision is None:
        # the shell renews only a lease it holds, but a renewal sent before a step-down
        # or a cut may come back after it
        if rng.random() < 0.5:
            r.renewed(rng.randrange(100, 199), now, renewing=rng.randrange(1, 99))
        return
    if rng.random() < 0.5:
        r.renewed(r.lease.revision + 1, now, renewing=r.lease.revision)
    else:
        r.renewal_failed(now, taken=rng.random() < 0.5, error="")


def _link(r: Role, link: Link, rng: random.Random, now: float) -> None:
    link.up = rng.random() < 0.7
    if not link.up:
        r.cut(now)


def _something_happens(r: Role, link: Link, rng: random.Random, now: float) -> None:
    """One message, write result or tick, at random (only those the shell can send)."""
    steps: list[Callable[[], object]] = [
        r.catch_up,
        lambda: r.catch_up_ended(finished=rng.random() < 0.8),
        lambda: r.presence_written(now - rng.choice((0.0, 0.1))),
        lambda: r.may_take() and r.won(rng.randrange(1, 99), now),
        lambda: _renewal(r, rng, now),
        lambda: _link(r, link, rng, now),
        r.leader_silent,
        lambda: r.followers_found(set(rng.sample(["a", "c", "d"], rng.randrange(3)))),
        lambda: r.leader_answered("a", "e1", rng.randrange(99), now),
        lambda: r.step_down("cut off"),
        lambda: r.lease_check(now),
    ]
    rng.choice(steps)()


def test_the_invariant_holds_whatever_comes_in() -> None:
    """publishes => answers => lists, and a cut-off or catching-up replica does nothing."""
    rng = random.Random(15)
    link = Link()
    r = role("b", link=link)
    now = 0.0
    seen = set()
    for _ in range(5_000):
        now += rng.choice((0.0, 0.05, 0.2, 0.9))
        _something_happens(r, link, rng, now)
        state = r.state(now)
        seen.add(state)
        assert not r.publishes(now) or r.answers(now)
        assert not r.answers(now) or r.lists(now)
        assert r.publishes(now) == (state == "leading")
        assert r.answers(now) == (state in ("leading", "deputy"))
        assert r.lists(now) == (state in ("leading", "deputy", "following"))
        assert not r.publishes(now) or r.lease.revision is not None
        # whoever speaks has won and not stepped down: it answers the followers' pings
        assert not r.publishes(now) or r.alone or r.leads
    assert seen == {"catching_up", "cut_off", "following", "deputy", "leading"}


# -- changes: published once, by the leader ------------------------------------------------
def test_a_follower_holds_its_changes_and_a_new_leader_announces_them_first() -> None:
    r = following()
    first, second = Change("registered", a_lease("i-1")), Change("unhealthy", a_lease("i-2"))
    assert r.announce(first, 0.1) is None
    assert r.announce(second, 0.15) is None
    r.leader_silent()
    held = r.won(revision=3, sent=0.2)
    assert [c.lease.instance_id for c in held] == ["i-1", "i-2"]  # oldest first
    assert r.epoch == "e1"  # the fleet's epoch continues
    assert r.seq == 5
    assert r.announce(Change("registered", a_lease("i-3")), 0.3) is not None  # sent at once


def test_the_first_leader_of_a_fleet_mints_its_epoch() -> None:
    r = role()
    r.catch_up()
    r.catch_up_ended(finished=True)
    r.presence_written(0.0)
    assert r.may_campaign()
    r.won(revision=1, sent=0.0)
    assert (r.epoch, r.seq, r.next_seq(), r.next_seq()) == ("epoch0", 0, 1, 2)


def test_a_removal_waits_for_a_lease_write_sent_after_it() -> None:
    r = leading()
    gone = Change("deregistered", a_lease("i-1"))
    after = Change("registered", a_lease("i-2"))
    assert r.announce(gone, 0.1) is None
    assert r.announce(after, 0.12) is None  # the same service's changes keep their order
    assert r.release(0.15) == []  # no write has been sent since
    r.renewed(8, sent=0.2, renewing=7)
    assert r.release(0.25) == [gone, after]


def test_what_waits_for_a_proof_goes_to_the_outbox_when_leading_ends() -> None:
    r = leading()
    gone = Change("deregistered", a_lease("i-1"))
    assert r.announce(gone, 0.1) is None
    r.renewal_failed(0.2, taken=True, error="")
    assert r.release(0.3) == []
    assert r.stopping(0.3) == []
    r.leader_silent()
    assert r.won(revision=9, sent=0.4) == [gone]  # announced by whoever leads next


def test_a_graceful_stop_sends_what_waits_for_a_proof() -> None:
    r = leading()
    gone = Change("deregistered", a_lease("i-1"))
    r.announce(gone, 0.1)
    assert r.stopping(0.2) == [gone]


def test_the_leaders_event_covers_a_followers_copy_and_carries_the_sequence() -> None:
    r = following()
    r.announce(Change("registered", a_lease("i-1")), 0.1)
    assert r.event_heard(event("registered", "i-1", seq=11), 0.2) == "i-1"
    assert r.seq == 11
    r.leader_silent()
    assert r.won(revision=2, sent=0.3) == []  # nothing left to announce twice
    assert r.event_heard(event("registered", "i-1", seq=12), 0.3) is None  # its own


def test_a_new_epoch_replaces_the_sequence() -> None:
    r = following()
    r.event_heard(event("registered", "i-1", epoch="e2", seq=1), 0.1)
    assert (r.epoch, r.seq) == ("e2", 1)


# -- cuts and catching up ------------------------------------------------------------------
def test_after_a_cut_the_replica_gives_the_lease_back_forgets_and_catches_up() -> None:
    link = Link()
    r = leading(link=link)
    r.announce(Change("registered", a_lease()), 0.05)
    r.renewed(8, sent=0.1, renewing=7)
    link.up = False
    assert r.cut(0.2)  # it was in touch until now: log it
    assert not r.cut(0.3)
    link.up = True
    assert r.lease_check(0.3) is None  # no revision any more: nothing to check
    r.leader_answered("c", "e1", 9, 0.4)  # another replica won meanwhile
    r.outbox.hold(Change("unhealthy", a_lease("i-9")), 0.4)  # made while cut off
    gap = r.presence_written(0.5)
    assert gap == 0.4  # from the last proof to this one
    assert r.state(0.5) == "catching_up"
    assert r.step_down("cut off").was_leading  # its part as leader ends here
    assert r.take_resign() == 8
    assert r.take_resign() is None
    assert len(r.outbox) == 0  # nobody should hear what it did while away


def test_a_catch_up_notes_what_arrives_meanwhile() -> None:
    r = role()
    copy = r.catch_up()
    r.heard(SVC, "new")
    r.removed(SVC, "gone")
    copy.listed.add((SVC, "kept"))
    assert copy.gone == {(SVC, "gone")}
    held = [(SVC, "kept"), (SVC, "new"), (SVC, "stale")]
    assert copy.unlisted(held) == [(SVC, "stale")]
    r.catch_up_ended(finished=False)  # a stop cut it short: still catching up
    assert r.state(0.0) == "catching_up"
    r.heard(SVC, "later")  # noted by nobody now
    assert copy.heard == {(SVC, "new")}


def test_a_peer_that_settled_settles_the_copy() -> None:
    r = role()
    assert not r.settled(1.0)
    r.first_page("e1", 4, settled=True)
    assert r.settled(1.0)
    assert (r.epoch, r.seq) == ("e1", 4)
    assert role(settle_s=5.0).settled(5.0)


def test_the_buckets_lease_is_adopted() -> None:
    r = role()
    r.adopt_lease(8.0)
    assert r.lease.lease_s == 8.0
    assert r.lease.window == 6.4
    assert isinstance(r.catch_up(), CatchUp)


def test_a_renewal_that_lands_after_the_step_down_does_not_bring_the_lease_back() -> None:
    """The write loop sent a renewal; before it came back, the window ran out and the ping
    loop stepped down. The key is this replica's again, but it leads no more: it must not
    speak (unseen by its peers, holding the key so none of them can win it)."""
    r = leading()  # won revision 7, sent at 0.0
    stepped = r.lease_check(1.6)  # the window (1.6 s) is over: the renewal is late
    assert stepped is not None
    assert stepped.was_leading
    assert not r.renewed(8, sent=1.5, renewing=7)  # the shell releases revision 8
    assert r.lease.revision is None
    assert not r.publishes(1.7)
    assert r.state(1.7) != "leading"
    assert r.leader == ""  # nobody leads: the followers campaign for the lease
    assert r.may_campaign()


def test_a_claim_found_held_by_this_replica_itself_is_taken_over() -> None:
    """Its claim timed out here but was stored: the key names it, nobody renews it. It
    takes the key over rather than wait a lease; a key naming another stays theirs."""
    r = following()
    r.leader_silent()  # nobody answers: it campaigns
    assert r.holds_unknowingly("b")
    assert not r.holds_unknowingly("a")  # another's: wait for it to expire or be released
    r.won(revision=9, sent=0.1)
    assert not r.holds_unknowingly("b")  # held knowingly: renewed, not taken over
    r.step_down("window over")
    r.leader_answered("a", "e1", 5, 0.2)  # another leads now: no campaign at all
    assert not r.holds_unknowingly("b")


def test_a_claim_won_while_the_role_moved_on_is_not_taken() -> None:
    """The claim was in flight when a leader answered, or the link dropped: what it won
    the shell gives back (after a cut the replica must catch up before it leads)."""
    link = Link()
    r = following(link=link)
    r.leader_silent()
    assert r.may_take()
    r.leader_answered("a", "e1", 6, 0.1)
    assert not r.may_take()
    r.leader_silent()
    link.up = False
    r.cut(0.2)
    link.up = True
    assert not r.may_take()  # until a write proves the link again (and it catches up)


def test_a_ping_sent_before_the_lease_was_won_does_not_unname_the_new_leader() -> None:
    # A follower's ping is in flight when its lease loop wins: the ping then meets
    # silence (or an old leader's answer). The winner must go on naming itself: a leader
    # whose listings named no leader kept a healed cluster from agreeing (a soak run).
    r = following("b")
    r.won(revision=7, sent=0.0)
    r.leader_silent()
    assert (r.leader, r.leads) == ("b", True)
    r.leader_answered("a", "e1", 5, 0.1)
    assert (r.leader, r.leads) == ("b", True)
