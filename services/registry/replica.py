"""One registry replica among several: the leader lease, catching up, who answers.

Every replica hears every registration and heartbeat (plain subscriptions) and keeps the
whole lease table. What this module decides, on the bus, with `LeaderLease` and `Outbox`
(pure logic) doing the arithmetic:

- the lease: a write to the `BATON_REGISTRY` KV bucket every `lease.interval` (the leader
  renews key `leader` with `update(last=)`, a follower puts `replica.{id}` and campaigns
  with `create()` while nobody leads). Only the holder publishes events and sweeps aloud.
- who answers registrations and heartbeats: the leader; and, while no leader answers its
  ping (it died, its lease has not expired yet), one deputy: the caught-up follower with
  the smallest id among those answering `registry.v1.replica.presence`. So a killed
  leader's instances are answered again within one ping interval, not one lease, and
  once, not once per replica.
- catching up: at start and after every cut, a replica reads a peer's table page by page
  (`registry.v1.replica.snapshot`, any caught-up replica) before it answers anything.
- without JetStream (a plain nats-server) a replica runs alone, as the registry did
  before replicas: it always leads. Run one per NATS system then.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors

from schemas import subjects
from schemas.registry import Empty, ReplicaSnapshot, ReplicaStatus, SnapshotQuery
from services.errors import BatonError, NoResponders, RequestTimeout, Unavailable
from services.jetstream import WRONG_LAST_SEQUENCE
from services.lifecycle import Lifecycle
from services.registry.bucket import KV_ERRORS, open_bucket, win_deleted
from services.registry.leader import LeaderLease
from services.registry.replication import EventHead, Outbox, apply_event, merge, records

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.kv import KeyValue
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.registry.leases import Change, LeaseTable

__all__ = ["Replica"]

PING_S = 0.2  # how often a follower asks whether the leader is alive
_GATHER_S = 0.05  # how long a follower waits for its peers' presence replies
_PAGE = 1_000  # leases per snapshot page (~250 kB)
_encode = msgspec.json.encode
_status = msgspec.json.Decoder(ReplicaStatus).decode


class Replica(Lifecycle):
    """The replica's place in the fleet; the registry worker asks it before it speaks."""

    def __init__(  # noqa: PLR0913  # dependencies, all passed in
        self,
        bus: Bus,
        table: LeaseTable,
        log: FilteringBoundLogger,
        *,
        lease_s: float,
        clock: Callable[[], float],
        wallclock: Callable[[], float],
        lead: Callable[[list[Change]], Awaitable[None]],
        serving_changed: Callable[[bool], Awaitable[None]],
        settled: Callable[[], bool],
    ) -> None:
        self.bus = bus
        self.table = table
        self.id = secrets.token_hex(4)
        self.log = log.bind(replica=self.id)
        self.clock = clock
        self.wallclock = wallclock
        self.lease = LeaderLease(lease_s)
        # the leader announces a change within a round trip, or a removal after its next
        # lease write (the worker's Barrier): a follower keeps its own copy that long
        self.outbox = Outbox(margin=self.lease.interval + 0.5, slack=lease_s)
        self.epoch = ""  # the fleet's: minted by the first leader, kept across handovers
        self.seq = 0  # the last event seq published or seen in `epoch`
        self.caught_up = False
        self.standalone = False  # no JetStream: this replica alone speaks
        self.leader = ""  # the replica believed to lead ("" while none answers)
        self.settled_peer = False  # a peer said the fleet has settled
        self._lead = lead
        self._settled = settled
        self._serving_changed = serving_changed
        self._serving = False
        self._leader_alive = False
        self._last_leader = ""
        self._deputy = True
        self._kv: KeyValue | None = None
        self._gone: set[tuple[str, str]] | None = None  # removals seen while catching up
        self._heard: set[tuple[str, str]] = set()  # registrations seen while catching up
        self._ping_sub: Subscription | None = None
        self._snapshot_sub: Subscription | None = None
        self._resign: int | None = None  # a revision held before a cut, to give back
        self._catching = asyncio.Lock()

    # -- what the worker asks ------------------------------------------------------------
    def speaking(self) -> bool:
        if not self.bus.nc.is_connected:
            return False
        return self.standalone or (self.caught_up and self.lease.speaking(self.clock()))

    def serving(self) -> bool:
        """Caught up and in touch with the quorum: its table is the fleet's."""
        if not self.bus.nc.is_connected or not self.caught_up:
            return False
        return self.standalone or self.lease.connected(self.clock())

    def answering(self) -> bool:
        """Should this replica answer registrations and heartbeats right now?"""
        return self.speaking() or (self.serving() and not self._leader_alive and self._deputy)

    def horizon(self) -> float | None:
        """Sweep up to here (None: sweep nothing yet)."""
        now = self.clock()
        return now if self.standalone else self.lease.horizon(now)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def hold(self, change: Change) -> None:
        """A change this replica may not announce: keep it until the leader has."""
        self.outbox.hold(change, self.clock())

    def removed(self, service: str, instance_id: str) -> None:
        if self._gone is not None:
            self._gone.add((service, instance_id))

    def heard(self, service: str, instance_id: str) -> None:
        """A registration arrived: while catching up, it is news the peer's page may lack."""
        if self._gone is not None:
            self._heard.add((service, instance_id))

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        serve = self.owned(self.bus.serve)
        await serve(subjects.EVENTS, EventHead, self._on_event, answer=False, per_service=True)
        await serve(subjects.REPLICA_PRESENCE, Empty, self._on_presence)
        self.on_close(self._let_go)  # after the loops below, which make and drop these
        self._kv = await self._bucket()
        if self._kv is None:
            self.standalone = True
            self.epoch = secrets.token_hex(6)
            self.caught_up = True
            self.log.warning("registry.standalone", reason="JetStream is not enabled")
        else:
            await self._catch_up()
            try:
                await self._ping()  # is somebody leading already?
                await self._write()  # the first proof (and the lease, if nobody holds it)
            except Exception:  # the loops below try again; a bug must not stop the start
                self.log.exception("registry.lease_failed")
        await self._check_serving()
        if not self.standalone:
            self.spawn(self._write_loop(), "registry.lease")
            self.spawn(self._ping_loop(), "registry.ping")

    async def stop(self) -> None:
        """Hand the lease over at once rather than let it expire."""
        if self._kv is not None and self.lease.revision is not None:
            with contextlib.suppress(*KV_ERRORS):
                await asyncio.wait_for(
                    self._kv.delete(subjects.LEADER_KEY, last=self.lease.revision), 1.0
                )
            self.lease.lost()

    async def _let_go(self) -> None:
        """Drop what leading and serving subscribed (they come and go with the role)."""
        subs = (self._ping_sub, self._snapshot_sub)
        self._ping_sub = self._snapshot_sub = None
        for sub in subs:
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def _bucket(self) -> KeyValue | None:
        """The lease bucket; None: no JetStream. Adopts the bucket's lease if it differs."""
        kv = await open_bucket(self.bus.nc, self.lease.lease_s, self.log)
        if kv is not None:
            ttl = (await kv.status()).ttl
            if ttl and abs(ttl - self.lease.lease_s) > 1e-3:  # the bucket's is everyone's
                self.lease = LeaderLease(ttl)
                self.outbox = Outbox(margin=self.lease.interval + 0.5, slack=ttl)
        return kv

    # -- the lease -----------------------------------------------------------------------
    def _value(self) -> bytes:
        return _encode(ReplicaStatus(replica=self.id, epoch=self.epoch, seq=self.seq))

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease.interval)
            try:
                await self._write()
                await self._check_serving()
            except Exception:  # a bug in one round must not end the lease loop
                self.log.exception("registry.lease_failed")

    async def _write(self) -> None:
        """This round's write: a renewal, or presence and (maybe) a campaign."""
        kv = self._kv
        if kv is None:  # standalone: nothing to write
            return
        sent = self.clock()
        if not self.bus.nc.is_connected:
            self._cut()
            return
        if self.lease.revision is not None:
            await self._renew(kv, sent)
            return
        try:
            await asyncio.wait_for(
                kv.put(subjects.replica_key(self.id), self._value()),
                self.lease.write_timeout(sent),
            )
        except KV_ERRORS:
            return  # no proof this round; enough missed rounds make this replica cut off
        proof = self.lease.proof(sent)
        if proof.resumed:
            await self._resume(proof.gap)
        if self.caught_up and not self._leader_alive:
            await self._campaign(kv, sent)

    async def _renew(self, kv: KeyValue, sent: float) -> None:
        lease = self.lease
        try:
            revision = await asyncio.wait_for(
                kv.update(subjects.LEADER_KEY, self._value(), last=lease.revision),
                lease.write_timeout(sent),
            )
        except nats.js.errors.APIError as exc:  # KeyWrongLastSequenceError is one
            if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
                getattr(exc, "err_code", None) in WRONG_LAST_SEQUENCE
            ):
                await self._step_down("lease taken")
            elif not lease.connected(self.clock()):
                await self._step_down(f"no renewal within the lease: {exc!r}")
        except KV_ERRORS as exc:
            if not lease.connected(self.clock()):
                await self._step_down(f"no renewal within the lease: {exc!r}")
        else:
            lease.won(revision, sent)

    async def _campaign(self, kv: KeyValue, sent: float) -> None:
        try:
            revision = await asyncio.wait_for(
                kv.create(subjects.LEADER_KEY, self._value()), self.lease.write_timeout(sent)
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # somebody holds it (nats-py has already ruled out a deleted key)
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) not in WRONG_LAST_SEQUENCE:
                return
            found = await win_deleted(kv, self._value(), self.lease.lease_s / 2)
            if found is None:
                return  # somebody holds it: try next round
            revision = found
        except KV_ERRORS:
            return  # the quorum is away: try next round
        self.lease.won(revision, sent)
        if not self.epoch:  # nobody before us in this fleet's memory: a new epoch
            self.epoch = secrets.token_hex(6)
            self.seq = 0
        self.leader = self.id
        self._leader_alive = True
        self._ping_sub = await self.bus.serve(subjects.REPLICA_LEADER, Empty, self._on_ping)
        held = self.outbox.take()
        self.log.info("registry.leader_elected", epoch=self.epoch, seq=self.seq, held=len(held))
        await self._lead(held)

    async def _step_down(self, reason: str) -> None:
        if self.lease.revision is None and self._ping_sub is None:
            return
        self.lease.lost()
        self._leader_alive = False
        self.leader = ""
        sub, self._ping_sub = self._ping_sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self.log.warning("registry.leader_lost", reason=reason)

    def _cut(self) -> None:
        if self.lease.revision is not None:
            self._resign = self.lease.revision
        was = self.lease.connected(self.clock())
        self.lease.cut()
        self._leader_alive = False
        if was:
            self.log.warning("registry.cut_off", reason="disconnected from NATS")

    async def _resume(self, gap: float) -> None:
        """Back in touch after `gap` seconds: credit the gap, give back the lease, catch up."""
        self.log.warning("registry.resumed", gap_s=round(gap, 3))
        await self._step_down("cut off")
        self.table.credit(gap, self.clock())
        if self._kv is not None and self._resign is not None:
            with contextlib.suppress(*KV_ERRORS):  # only if it is still ours
                await asyncio.wait_for(
                    self._kv.delete(subjects.LEADER_KEY, last=self._resign), self.lease.interval
                )
        self._resign = None
        self.caught_up = False
        self.outbox.clear()  # what it did while cut off, nobody should hear
        await self._check_serving()
        await self._catch_up()

    # -- the leader's ping ---------------------------------------------------------------
    async def _on_ping(self, _subject: str, _: Empty) -> ReplicaStatus | None:
        if not self.speaking():
            return None
        return ReplicaStatus(replica=self.id, epoch=self.epoch, seq=self.seq)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            try:
                await self._ping()
                await self._check_serving()
            except Exception:  # one bad round must not end the pings
                self.log.exception("registry.ping_failed")

    async def _ping(self) -> None:
        if not self.bus.nc.is_connected:
            self._cut()
            return
        if self.lease.revision is not None:
            if not self.lease.connected(self.clock()):
                await self._step_down("no renewal within the lease")
            return
        try:
            status = await self.bus.request(
                subjects.REPLICA_LEADER, Empty(), ReplicaStatus, timeout=PING_S
            )
        except (NoResponders, RequestTimeout):
            self._leader_alive = False
            self.leader = ""
            self._deputy = await self._first_of_peers()
            return
        except BatonError:
            return
        self._leader_alive = True
        self.leader = self._last_leader = status.replica
        self._adopt(status.epoch, status.seq)
        self.outbox.prune(self.clock())

    async def _first_of_peers(self) -> bool:
        """Is this the live, caught-up follower with the smallest id (the one to answer)?

        Every serving replica answers `registry.v1.replica.presence`; a dead one has no
        subscription left, so the replies gathered within `_GATHER_S` are the live set.
        """
        nc = self.bus.nc
        inbox = nc.new_inbox()
        ids = {self.id}

        async def on_reply(msg: Msg) -> None:
            with contextlib.suppress(msgspec.MsgspecError):
                ids.add(_status(msg.data).replica)

        try:
            sub = await nc.subscribe(inbox, cb=on_reply)
        except nats.errors.Error:
            return True  # better two answers than none
        try:
            await nc.publish(subjects.REPLICA_PRESENCE, b"{}", reply=inbox)
            await asyncio.sleep(_GATHER_S)  # replies come within a round trip, or never
        except nats.errors.Error:
            return True
        finally:  # also when cancelled (a stop): no inbox left subscribed
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return min(ids) == self.id

    async def _on_presence(self, _subject: str, _: Empty) -> ReplicaStatus | None:
        if not self.serving() or self.speaking():
            return None
        return ReplicaStatus(replica=self.id, epoch=self.epoch, seq=self.seq, leader=False)

    def _adopt(self, epoch: str, seq: int) -> None:
        if not epoch:
            return
        if epoch != self.epoch:
            self.epoch, self.seq = epoch, seq
        elif seq > self.seq:
            self.seq = seq

    async def _check_serving(self) -> None:
        """Offer snapshots (and let the worker offer listings) only while serving, so a
        request finds a replica that can answer it, or no responders at once."""
        serving = self.serving()
        if serving == self._serving:
            return
        self._serving = serving
        if serving:
            self._snapshot_sub = await self.bus.serve(
                subjects.REPLICA_SNAPSHOT, SnapshotQuery, self._on_snapshot, queue="registry"
            )
        elif self._snapshot_sub is not None:
            sub, self._snapshot_sub = self._snapshot_sub, None
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await self._serving_changed(serving)

    # -- the leader's events, heard by followers -------------------------------------------
    async def _on_event(self, _service: str, event: EventHead) -> None:
        if self.speaking():
            return  # our own, or a stale one from before we led
        self._adopt(event.epoch, event.seq)
        now = self.clock()
        iid = event.instance_id
        apply_event(self.table, event, iid, now, self.wallclock())
        self.outbox.covered(event.service, iid)
        if event.kind in ("expired", "deregistered"):
            self.removed(event.service, iid)
        self.outbox.prune(now)

    # -- catching up ---------------------------------------------------------------------
    async def _on_snapshot(self, _subject: str, query: SnapshotQuery) -> ReplicaSnapshot:
        if not self.serving():
            raise Unavailable(f"registry replica {self.id} is catching up; ask another")
        page, next_after = records(self.table, query.after, query.limit, self.clock(), self.outbox)
        return ReplicaSnapshot(
            replica=self.id,
            epoch=self.epoch,
            seq=self.seq,
            settled=self._settled(),
            leases=page,
            next_after=next_after,
        )

    def _drop_unlisted(self, keep: set[tuple[str, str]]) -> int:
        stale = [
            (service, iid)
            for service, leases in self.table.services.items()
            for iid in leases
            if (service, iid) not in keep
        ]
        for service, iid in stale:
            self.table.remove(service, iid)
        return len(stale)

    async def _catch_up(self) -> None:
        """Take a caught-up peer's table (if there is one) before answering anything."""
        async with self._catching:
            self._gone, self._heard = set(), set()
            listed: set[tuple[str, str]] = set()
            pages = taken = 0
            whole = False
            after = ""
            tries = 0
            try:
                while True:
                    try:
                        page = await self.bus.request(
                            subjects.REPLICA_SNAPSHOT,
                            SnapshotQuery(after=after, limit=_PAGE),
                            ReplicaSnapshot,
                            timeout=2.0,
                        )
                    except NoResponders:
                        break  # no peer is caught up: this table is the fleet's
                    except (Unavailable, RequestTimeout) as exc:
                        tries += 1
                        if tries >= 5:
                            self.log.warning("registry.catch_up_incomplete", error=exc.message)
                            break
                        await asyncio.sleep(0.1 * tries)
                        continue
                    if pages == 0:
                        self._adopt(page.epoch, page.seq)
                        self.settled_peer = self.settled_peer or page.settled
                    pages += 1
                    taken += merge(self.table, page.leases, self.clock(), self._gone, self.outbox)
                    listed.update((rec.service, rec.instance_id) for rec in page.leases)
                    after = page.next_after
                    if not after:
                        whole = True
                        break
                # The peer's whole table is the fleet's: what it lacks here, it expired or
                # saw deregistered (and announced) while this replica was away.
                dropped = self._drop_unlisted(listed | self._heard) if whole else 0
            finally:
                self._gone, self._heard = None, set()
            self.caught_up = True
            self.log.info(
                "registry.caught_up",
                pages=pages,
                taken=taken,
                dropped=dropped,
                leases=self.table.total,
                epoch=self.epoch,
                seq=self.seq,
            )
