"""One registry replica's role in the fleet, as pure logic: messages and ticks in, decisions out.

Every replica hears every registration and heartbeat and keeps the whole lease table; the
role says what it may do with what it hears. Five states, by what they mean:

- `catching_up`: copying a caught-up peer's table (at start, after a cut). Its table is
  not the fleet's yet: it answers nothing, lists nothing, publishes nothing.
- `cut_off`: caught up, but no write reached the JetStream quorum within the window (or
  the NATS link dropped). Nothing it hears is the fleet's whole truth: it answers,
  lists and publishes nothing, and sweeps only up to its last proof.
- `following`: caught up and in touch; a leader answers its ping. It lists (one of the
  queue group `registry`), keeps what it changed in the outbox until the leader has
  announced it, and campaigns when nobody leads.
- `deputy`: a follower while no leader answers its ping (the leader died; its lease has
  not run out), and the one with the smallest id among the live followers. It answers
  registrations and heartbeats from its own table, which is already whole, so answers
  resume within a ping, not a lease. It publishes nothing: events wait for the next leader.
  Until its first presence call after the leader fell silent, each follower counts itself
  first: for those 50 ms a few may answer, with the same `Ack` (the contract allows it).
- `leading`: holds the leader lease and is in touch. It answers, lists, sweeps aloud and
  publishes every event. Without JetStream a replica runs `alone`: always leading.

The invariant, for every replica r at every instant t (`LeaderLease` in leader.py proves
that at most one replica holds the lease's speaking window at a time):

    publishes(r, t)  <=>  linked(r) and caught_up(r) and (alone(r) or lease_speaking(r, t))
    lists(r, t)      <=>  linked(r) and caught_up(r) and (alone(r) or proved(r) > t - window)
    answers(r, t)    <=>  publishes(r, t)
                          or (lists(r, t) and no leader answered r's last ping
                              and r = min(ids that answered r's last presence call))

so `publishes` implies `answers` implies `lists`, and every change is published once: a
change a non-publishing replica makes is held (outbox) until the leader's event covers it
or the leader was alive long after it; a new leader publishes what is still held first.
A removal the leader hears waits (barrier) for a lease write sent after it.

The one probe of the world outside is `linked()`, read on every decision: nats-py buffers
what is published while it reconnects, so a replica must not answer while unlinked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

from services.registry.leader import LeaderLease
from services.registry.replication import Barrier, Outbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.registry.leases import Change
    from services.registry.replication import EventHead

__all__ = ["CatchUp", "Role", "State", "Stepped"]

State = Literal["catching_up", "cut_off", "following", "deputy", "leading"]

_REMOVED = frozenset({"expired", "deregistered"})


class Stepped(NamedTuple):
    """What a lost lease or a cut means for the shell: stop answering pings, and why."""

    was_leading: bool
    reason: str


class CatchUp:
    """What a replica heard while it copied a peer's table, page by page.

    The pages may be older than what arrived meanwhile: a removal heard here wins over the
    page (`gone`), and a registration heard here is kept even if the peer's table lacks it
    (`heard`). `listed` is what the peer's pages named: once the last page is in, what the
    peer lacks and nobody registered meanwhile was removed (and announced) while this
    replica was away.
    """

    __slots__ = ("gone", "heard", "listed", "pages", "taken")

    def __init__(self) -> None:
        self.gone: set[tuple[str, str]] = set()
        self.heard: set[tuple[str, str]] = set()
        self.listed: set[tuple[str, str]] = set()
        self.pages = 0
        self.taken = 0

    def unlisted(self, held: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of the leases `held` here, those to drop once the peer's whole table is in."""
        keep = self.listed | self.heard
        return [key for key in held if key not in keep]


class Role:
    """The state of one replica's role, and the decisions each message or tick leads to."""

    __slots__ = (
        "alone",
        "barrier",
        "catching",
        "caught_up",
        "epoch",
        "first_in_line",
        "id",
        "leader",
        "leader_answers",
        "leads",
        "lease",
        "linked",
        "mint",
        "outbox",
        "resign",
        "seq",
        "settle_s",
        "settled_peer",
        "started",
    )

    def __init__(
        self,
        replica_id: str,
        *,
        lease_s: float,
        settle_s: float,
        started: float,
        linked: Callable[[], bool],
        mint: Callable[[], str],
    ) -> None:
        self.id = replica_id
        self.linked = linked  # is the NATS connection up right now?
        self.mint = mint  # a new epoch: 12 hex digits
        self.started = started
        self.settle_s = settle_s
        self.lease = LeaderLease(lease_s)
        self.outbox = self._outbox()
        self.barrier = Barrier()
        self.epoch = ""  # the fleet's: minted by the first leader, kept across handovers
        self.seq = 0  # the last event seq published or seen in `epoch`
        self.caught_up = False
        self.alone = False  # no JetStream: this replica alone publishes
        self.leader = ""  # the replica believed to lead ("" while none answers)
        self.leader_answers = False  # the leader answered the last ping
        # won the lease and has not stepped down since (a cut ends the lease at once, but
        # the leader's part, its ping responder, ends when it steps down)
        self.leads = False
        self.first_in_line = True  # the smallest id among the live followers
        self.settled_peer = False  # a peer said the fleet has settled
        self.resign: int | None = None  # a revision held before a cut, to give back
        self.catching: CatchUp | None = None

    def _outbox(self) -> Outbox:
        # the leader announces a change within a round trip, or a removal after its next
        # lease write (the barrier): a follower keeps its own copy that long
        return Outbox(margin=self.lease.interval + 0.5, slack=self.lease.lease_s)

    # -- what the replica may do now (the hot path asks these per message) -----------------
    def publishes(self, now: float) -> bool:
        if not self.linked():
            return False
        return self.alone or (self.caught_up and self.lease.speaking(now))

    def lists(self, now: float) -> bool:
        """Caught up and in touch with the quorum: its table is the fleet's."""
        if not self.caught_up or not self.linked():
            return False
        return self.alone or self.lease.connected(now)

    def answers(self, now: float) -> bool:
        """Should this replica answer registrations and heartbeats right now?"""
        if self.publishes(now):
            return True
        return not self.leader_answers and self.first_in_line and self.lists(now)

    def state(self, now: float) -> State:
        if not self.caught_up:
            return "catching_up"
        if not self.lists(now):
            return "cut_off"
        if self.publishes(now):
            return "leading"
        return "deputy" if self.answers(now) else "following"

    def horizon(self, now: float) -> float | None:
        """Sweep up to here (None: sweep nothing yet)."""
        return now if self.alone else self.lease.horizon(now)

    def settled(self, now: float) -> bool:
        """Has every live instance been heard from (or a peer that had, copied)?"""
        return self.settled_peer or now - self.started >= self.settle_s

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # -- the changes its table makes -------------------------------------------------------
    def announce(self, change: Change, now: float) -> Change | None:
        """The change if it is to be published now; else it is held, and None."""
        if not self.publishes(now):  # the leader announces it; or we do, if we win
            self.outbox.hold(change, now)
            return None
        if self.barrier.needs(change):  # until a lease write proves the quorum heard it
            self.barrier.hold(change, now)
            return None
        return change

    def release(self, now: float) -> list[Change]:
        """What waited for a proof of quorum and may go out now; if no longer leading,
        it is handed to the outbox instead."""
        if not self.barrier:
            return []
        if not self.publishes(now):
            for change in self.barrier.take():
                self.outbox.hold(change, now)
            return []
        horizon = self.horizon(now)
        return [] if horizon is None else self.barrier.release(horizon)

    def stopping(self, now: float) -> list[Change]:
        """A graceful stop: what waits for a proof goes out now, if this replica leads."""
        return self.barrier.take() if self.publishes(now) else []

    def heard(self, service: str, instance_id: str) -> None:
        """A registration arrived: while catching up, it is news the peer's page may lack."""
        if self.catching is not None:
            self.catching.heard.add((service, instance_id))

    def removed(self, service: str, instance_id: str) -> None:
        """A deregistration or a removal event: while catching up, it beats the pages."""
        if self.catching is not None:
            self.catching.gone.add((service, instance_id))

    # -- messages from the other replicas --------------------------------------------------
    def event_heard(self, event: EventHead, now: float) -> str | None:
        """The leader's event: the id of the instance this replica's table should bring to
        it, or None (this replica publishes: the event is its own, or stale)."""
        if self.publishes(now):
            return None
        self.adopt(event.epoch, event.seq)
        instance_id = event.instance_id
        self.outbox.covered(event.service, instance_id)
        if event.kind in _REMOVED:
            self.removed(event.service, instance_id)
        self.outbox.prune(now)
        return instance_id

    def leader_answered(self, leader: str, epoch: str, seq: int, now: float) -> None:
        if self.leads:  # a ping sent before this replica won: its answer is out of date
            return
        self.leader_answers = True
        self.leader = leader
        self.adopt(epoch, seq)
        self.outbox.prune(now)

    def leader_silent(self) -> None:
        """No leader answered the ping: a deputy answers from now on (the one in line
        until the presence call says otherwise, `followers_found`). Not while this replica
        leads: the ping went out before it won, and the silence it met was its own (its
        listings would name no leader for as long as it leads)."""
        if self.leads:
            return
        self.leader_answers = False
        self.leader = ""

    def followers_found(self, live: set[str]) -> None:
        """The live caught-up followers answered the presence call: is this one first?"""
        self.first_in_line = min(live | {self.id}) == self.id

    def adopt(self, epoch: str, seq: int) -> None:
        if not epoch:
            return
        if epoch != self.epoch:
            self.epoch, self.seq = epoch, seq
        elif seq > self.seq:
            self.seq = seq

    # -- catching up -----------------------------------------------------------------------
    def catch_up(self) -> CatchUp:
        """Start copying a peer's table: from now on, what arrives is noted."""
        self.catching = CatchUp()
        return self.catching

    def first_page(self, epoch: str, seq: int, *, settled: bool) -> None:
        self.adopt(epoch, seq)
        self.settled_peer = self.settled_peer or settled

    def catch_up_ended(self, *, finished: bool) -> None:
        """The copy is over: `finished` unless it was cut short (a stop); an incomplete copy
        (no peer, or none answered) leaves this replica caught up as far as it can be."""
        self.catching = None
        self.caught_up = self.caught_up or finished

    def run_alone(self) -> None:
        """No JetStream: nobody to share the lease with, so this replica always leads."""
        self.alone = True
        self.epoch = self.mint()
        self.caught_up = True

    def adopt_lease(self, lease_s: float) -> None:
        """The bucket's lease is everyone's: take it if it differs from the setting."""
        if abs(lease_s - self.lease.lease_s) > 1e-3:
            self.lease = LeaderLease(lease_s)
            self.outbox = self._outbox()

    # -- the lease: what each write said ---------------------------------------------------
    def may_campaign(self) -> bool:
        return self.caught_up and not self.leader_answers

    def holds_unknowingly(self, holder: str) -> bool:
        """A claim was refused: the key names `holder`. If that is this replica, its own
        earlier claim was stored after the write timed out here; nobody renews it, so
        nobody could lead until it expires. True: take it over (`update(last=)` of that
        revision, a lease counted from that write), as if the claim had been won."""
        return holder == self.id and self.may_campaign() and self.lease.revision is None

    def may_take(self) -> bool:
        """A claim came back won: may this replica lead on it? Not if, while it was in
        flight, a leader answered, another write took the lease, or the link dropped (a cut
        must be caught up from before leading): the shell releases what it won."""
        return self.may_campaign() and self.lease.revision is None and not self.lease.was_cut

    def won(self, revision: int, sent: float) -> list[Change]:
        """The lease is ours: what nobody announced meanwhile, to announce first."""
        self.lease.won(revision, sent)
        if not self.epoch:  # nobody before us in this fleet's memory: a new epoch
            self.epoch = self.mint()
            self.seq = 0
        self.leader = self.id
        self.leads = True
        self.leader_answers = True
        return self.outbox.take()

    def renewed(self, revision: int, sent: float, *, renewing: int) -> bool:
        """A renewal built on `renewing` wrote `revision`: False if this replica gave that
        lease up while the write was in flight (a step-down, a cut). The key is its own
        again, but it leads no more (no ping responder, no `leader`): taking the revision
        would let it speak unseen and renew the key forever, so that nobody else can win
        it. The shell releases `revision` instead."""
        if self.lease.revision != renewing:
            return False
        self.lease.won(revision, sent)
        return True

    def renewal_failed(self, now: float, *, taken: bool, error: str) -> Stepped | None:
        """A renewal was refused (`taken`) or did not reach the quorum."""
        if taken:
            return self.step_down("lease taken")
        if not self.lease.connected(now):
            return self.step_down(f"no renewal within the lease: {error}")
        return None  # another try next round, within the window

    def lease_check(self, now: float) -> Stepped | None:
        """Between writes: a leader whose last renewal is older than the window steps down."""
        if self.lease.revision is not None and not self.lease.connected(now):
            return self.step_down("no renewal within the lease")
        return None

    def step_down(self, reason: str) -> Stepped:
        """Give up the lease (if held) and the leader's part (if played); a cut has already
        dropped the revision, but the leader's part ends here."""
        was = self.lease.revision is not None or self.leads
        if was:
            self.lease.lost()
            self.leads = False
            self.leader_answers = False
            self.leader = ""
        return Stepped(was_leading=was, reason=reason)

    def cut(self, now: float) -> bool:
        """The NATS link dropped: True if this replica was in touch until now (log it)."""
        if self.lease.revision is not None:
            self.resign = self.lease.revision
        was = self.lease.connected(now)
        self.lease.cut()
        self.leader_answers = False
        return was

    def presence_written(self, sent: float) -> float | None:
        """A follower's presence write succeeded; the cut's length if it ends one.

        After a cut, what this replica did while away nobody should hear (the outbox is
        emptied), and its table must be caught up again before it serves.
        """
        proof = self.lease.proof(sent)
        if not proof.resumed:
            return None
        self.caught_up = False
        self.outbox.clear()
        return proof.gap

    def take_resign(self) -> int | None:
        """The revision held before a cut, to delete if it is still ours (once)."""
        revision, self.resign = self.resign, None
        return revision
