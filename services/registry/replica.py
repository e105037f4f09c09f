"""One registry replica's I/O: the lease writes, the pings, the catch-up, what it offers.

What to do is decided by the replica's `Role` (role.py, pure logic, which names the five
states and writes their invariant); this module only carries it out on the bus:

- the lease: a write to the `BATON_REGISTRY` KV bucket every `PROOF_INTERVAL_S` (the
  leader renews key `leader`, a follower puts `replica.{id}` and campaigns while nobody
  leads). Each successful write proves the replica reaches the stream's quorum.
- the ping: every `PING_S`, a follower asks `registry.v1.replica.leader`; while nobody
  answers, it gathers the live followers on `registry.v1.replica.presence` (the deputy
  is the smallest id among them).
- catching up: at start and after every cut, a page-by-page copy of a caught-up peer's
  table (`registry.v1.replica.snapshot`) before the replica lists or answers anything.
- offers: the leader's ping responder while it leads; the snapshot and the worker's
  listings (queue group `registry`) while the role lists.

Both periods are the protocol, not retries: every write and ping is one round of it,
whatever the last one did, so they are fixed and need no jitter.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import msgspec

from schemas import subjects
from schemas.registry import Empty, ReplicaSnapshot, ReplicaStatus, SnapshotQuery
from services.errors import BatonError, NoResponders, RequestTimeout, Unavailable
from services.lifecycle import Lifecycle, Offer
from services.registry.replication import EventHead, apply_event, merge, records
from services.retry import Backoff
from services.stream.lease import Lease

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.lifecycle import Subscribe
    from services.registry.leases import Change, LeaseTable
    from services.registry.role import CatchUp, Role, Stepped

__all__ = ["PING_S", "Replica"]

PING_S = 0.2  # how often a follower asks whether the leader is alive
_GATHER_S = 0.05  # how long a follower waits for its peers' presence replies
_PAGE = 1_000  # leases per snapshot page (~250 kB)
_PAGE_TRIES = 5  # a page refused or unanswered this often: take what was copied
_PAGE_RETRY = Backoff(base_s=0.1, cap_s=0.5)
_encode = msgspec.json.encode


class Replica(Lifecycle):
    """Carries out `role`'s decisions; `publish` sends an event the role let through."""

    def __init__(  # noqa: PLR0913  # dependencies, all passed in
        self,
        bus: Bus,
        table: LeaseTable,
        role: Role,
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], float],
        wallclock: Callable[[], float],
        publish: Callable[[Change], Awaitable[None]],
        listings: Sequence[Subscribe],
    ) -> None:
        self.bus = bus
        self.table = table
        self.role = role
        self.log = log.bind(replica=role.id)
        self.clock = clock
        self.wallclock = wallclock
        self._publish = publish
        self._kv_lease: Lease | None = None
        self._leader_offer = Offer(
            functools.partial(bus.serve, subjects.REPLICA_LEADER, Empty, self._on_ping)
        )
        snapshot = functools.partial(
            bus.serve, subjects.REPLICA_SNAPSHOT, SnapshotQuery, self._on_snapshot, queue="registry"
        )
        self._listing_offer = Offer(snapshot, *listings)
        self._catching = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        serve = self.owned(self.bus.serve)
        await serve(subjects.EVENTS, EventHead, self._on_event, answer=False, per_service=True)
        await serve(subjects.REPLICA_PRESENCE, Empty, self._on_presence)
        self.on_close(self._withdraw)  # after the loops below, which offer and withdraw
        role = self.role
        self._kv_lease = await Lease.open(
            self.bus, subjects.REGISTRY_BUCKET, subjects.LEADER_KEY, role.lease.lease_s, self.log
        )
        if self._kv_lease is None:
            role.run_alone()
            self.log.warning("registry.standalone", reason="JetStream is not enabled")
        else:
            role.adopt_lease(self._kv_lease.ttl)
            await self._catch_up()
            try:
                await self._ping()  # is somebody leading already?
                await self._write()  # the first proof (and the lease, if nobody holds it)
            except Exception:  # the loops below try again; a bug must not stop the start
                self.log.exception("registry.lease_failed")
        await self._offer()
        if not role.alone:
            self.spawn(self._write_loop(), "registry.lease")
            self.spawn(self._ping_loop(), "registry.ping")

    async def stop(self) -> None:
        """Hand the lease over at once rather than let it expire."""
        revision = self.role.lease.revision
        if self._kv_lease is not None and revision is not None:
            await self._kv_lease.release(revision, 1.0)
            self.role.step_down("stopped")

    async def _withdraw(self) -> None:
        await self._leader_offer.set(False)
        await self._listing_offer.set(False)

    async def _offer(self) -> None:
        await self._listing_offer.set(self.role.lists(self.clock()))

    def _status(self) -> ReplicaStatus:
        role = self.role
        return ReplicaStatus(replica=role.id, epoch=role.epoch, seq=role.seq)

    # -- the lease -----------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.role.lease.interval)
            try:
                await self._write()
                await self._offer()
            except Exception:  # a bug in one round must not end the lease loop
                self.log.exception("registry.lease_failed")

    async def _write(self) -> None:
        """This round's write: a renewal, or presence and (maybe) a campaign."""
        lease, role = self._kv_lease, self.role
        if lease is None:  # alone: nothing to write (the KV lease; role.lease is its clock)
            return
        sent = self.clock()
        if not self.bus.connected:
            self._cut(sent)
            return
        timeout = role.lease.write_timeout(sent)
        revision = role.lease.revision
        if revision is not None:
            renewal = await lease.renew(_encode(self._status()), revision, timeout)
            if renewal.revision is not None:
                if not role.renewed(renewal.revision, sent, renewing=revision):
                    # stepped down while it was in flight: give the key back at once
                    self.log.info("registry.lease_released", revision=renewal.revision)
                    await lease.release(renewal.revision, role.lease.interval)
            else:
                now = self.clock()
                await self._stepped(
                    role.renewal_failed(now, taken=renewal.refused, error=renewal.error)
                )
            return
        if not await lease.mark(subjects.replica_key(role.id), _encode(self._status()), timeout):
            return  # no proof this round; enough missed rounds make this replica cut off
        gap = role.presence_written(sent)
        if gap is not None:
            await self._resume(gap)
        if role.may_campaign():
            await self._campaign(lease)

    async def _campaign(self, lease: Lease) -> None:
        role = self.role
        # the claim's own send time: a catch-up may have taken seconds since the presence
        # write, and a lease counted from before it would be over as soon as it is won
        sent = self.clock()
        revision = await lease.claim(_encode(self._status()), role.lease.write_timeout(sent))
        if revision is None:
            revision, sent = await self._take_over(lease)
        if revision is None:
            return  # somebody holds it, or the quorum is away: try next round
        if not role.may_take():  # the role moved on while the claim was in flight
            self.log.info("registry.lease_released", revision=revision)
            await lease.release(revision, role.lease.interval)
            return
        held = role.won(revision, sent)
        await self._leader_offer.set(True)
        self.log.info("registry.leader_elected", epoch=role.epoch, seq=role.seq, held=len(held))
        for change in held:  # what nobody announced meanwhile goes first
            if role.announce(change, self.clock()) is not None:
                await self._publish(change)

    async def _take_over(self, lease: Lease) -> tuple[int | None, float]:
        """The key held by this replica's own claim, unknown to it (its write timed out
        here but was stored): renewed now, its new revision and that write's send time."""
        role = self.role
        found = await lease.holder(role.lease.interval)
        if found is None:
            return None, 0.0
        value, held = found
        try:
            holder = msgspec.json.decode(value, type=ReplicaStatus).replica
        except msgspec.DecodeError:  # not a replica's status: not ours either
            return None, 0.0
        if not role.holds_unknowingly(holder):
            return None, 0.0
        sent = self.clock()
        renewal = await lease.renew(_encode(self._status()), held, role.lease.write_timeout(sent))
        if renewal.revision is not None:
            self.log.info("registry.lease_taken_over", revision=held)
        return renewal.revision, sent

    async def _stepped(self, stepped: Stepped | None) -> None:
        if stepped is None or not stepped.was_leading:
            return
        await self._leader_offer.set(False)
        self.log.warning("registry.leader_lost", reason=stepped.reason)

    def _cut(self, now: float) -> None:
        if self.role.cut(now):
            self.log.warning("registry.cut_off", reason="disconnected from NATS")

    async def _resume(self, gap: float) -> None:
        """Back in touch after `gap` seconds: credit the gap, give back the lease, catch up."""
        self.log.warning("registry.resumed", gap_s=round(gap, 3))
        role = self.role
        await self._stepped(role.step_down("cut off"))
        self.table.credit(gap, self.clock())
        resign = role.take_resign()
        if self._kv_lease is not None and resign is not None:  # only if it is still ours
            await self._kv_lease.release(resign, role.lease.interval)
        await self._offer()
        await self._catch_up()

    # -- the leader's ping ---------------------------------------------------------------
    async def _on_ping(self, _subject: str, _: Empty) -> ReplicaStatus | None:
        return self._status() if self.role.publishes(self.clock()) else None

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            try:
                await self._ping()
                await self._offer()
            except Exception:  # one bad round must not end the pings
                self.log.exception("registry.ping_failed")

    async def _ping(self) -> None:
        role, now = self.role, self.clock()
        if not self.bus.connected:
            self._cut(now)
            return
        if role.lease.revision is not None:  # the leader: only its own lease to check
            await self._stepped(role.lease_check(now))
            return
        try:
            status = await self.bus.request(
                subjects.REPLICA_LEADER, Empty(), ReplicaStatus, timeout=PING_S
            )
        except (NoResponders, RequestTimeout):
            role.leader_silent()
            role.followers_found(await self._live_followers())
            return
        except BatonError:
            return
        role.leader_answered(status.replica, status.epoch, status.seq, self.clock())

    async def _live_followers(self) -> set[str]:
        """The caught-up followers that answer the presence call (a dead one has no
        subscription left, so the replies gathered within `_GATHER_S` are the live set).
        None heard (the call could not go out): this one alone, better two answers than
        none."""
        try:
            replies = await self.bus.gather(
                subjects.REPLICA_PRESENCE, Empty(), ReplicaStatus, within=_GATHER_S
            )
        except Unavailable:
            return set()
        return {status.replica for status in replies}

    async def _on_presence(self, _subject: str, _: Empty) -> ReplicaStatus | None:
        role, now = self.role, self.clock()
        if not role.lists(now) or role.publishes(now):
            return None
        return ReplicaStatus(replica=role.id, epoch=role.epoch, seq=role.seq, leader=False)

    # -- the leader's events, heard by followers -------------------------------------------
    async def _on_event(self, _service: str, event: EventHead) -> None:
        now = self.clock()
        instance_id = self.role.event_heard(event, now)
        if instance_id is not None:
            apply_event(self.table, event, instance_id, now, self.wallclock())

    # -- catching up ---------------------------------------------------------------------
    async def _on_snapshot(self, _subject: str, query: SnapshotQuery) -> ReplicaSnapshot:
        role, now = self.role, self.clock()
        if not role.lists(now):
            raise Unavailable(f"registry replica {role.id} is catching up; ask another")
        page, next_after = records(self.table, query.after, query.limit, now, role.outbox)
        return ReplicaSnapshot(
            replica=role.id,
            epoch=role.epoch,
            seq=role.seq,
            settled=role.settled(now),
            leases=page,
            next_after=next_after,
        )

    async def _catch_up(self) -> None:
        """Take a caught-up peer's table (if there is one) before answering anything."""
        async with self._catching:
            finished = False
            try:
                copy, dropped = await self._copy_peer()
                finished = True
            finally:
                self.role.catch_up_ended(finished=finished)
        role = self.role
        self.log.info(
            "registry.caught_up",
            pages=copy.pages,
            taken=copy.taken,
            dropped=dropped,
            leases=self.table.total,
            epoch=role.epoch,
            seq=role.seq,
        )

    async def _copy_peer(self) -> tuple[CatchUp, int]:
        """Copy page after page; the copy, and how many leases it dropped as stale."""
        role, table = self.role, self.table
        copy = role.catch_up()
        retry = _PAGE_RETRY.retry()
        after = ""
        while True:
            try:
                page = await self.bus.request(
                    subjects.REPLICA_SNAPSHOT,
                    SnapshotQuery(after=after, limit=_PAGE),
                    ReplicaSnapshot,
                    timeout=2.0,
                )
            except NoResponders:
                return copy, 0  # no peer is caught up: this table is the fleet's
            except (Unavailable, RequestTimeout) as exc:
                if retry.attempts + 1 >= _PAGE_TRIES:
                    self.log.warning("registry.catch_up_incomplete", error=exc.message)
                    return copy, 0
                await retry.wait()
                continue
            if copy.pages == 0:
                role.first_page(page.epoch, page.seq, settled=page.settled)
            copy.pages += 1
            copy.taken += merge(table, page.leases, self.clock(), copy.gone, role.outbox)
            copy.listed.update((rec.service, rec.instance_id) for rec in page.leases)
            after = page.next_after
            if not after:
                break
        # The peer's whole table is the fleet's: what it lacks here, it expired or saw
        # deregistered (and announced) while this replica was away.
        held = [(service, iid) for service, leases in table.services.items() for iid in leases]
        stale = copy.unlisted(held)
        for service, instance_id in stale:
            table.remove(service, instance_id)
        return copy, len(stale)
