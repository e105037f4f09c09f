"""What registry replicas exchange, as pure logic: snapshots, the leader's events, and
the changes a follower holds until it knows the leader announced them.

Every replica hears the same registrations and heartbeats, so every table changes alike;
only the leader publishes. A follower keeps each change it made in an `Outbox` until the
leader's event for that instance arrives, or until the leader has shown it was alive
`margin` seconds after the change (it heard the same message, so it announced it or
decided there was nothing to announce). Sweep changes wait longer (`slack`): the leader
sweeps only up to its last proof of quorum, so it may announce them up to one write
interval later than a follower notices them. When a follower wins the lease, what is
still in its outbox is what nobody announced: it announces that first, continuing the
sequence it followed, so readers see neither a gap nor a second copy.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from schemas.registry import EventKind, Instance, LeaseRecord, Registration
from services.registry.leases import Change

if TYPE_CHECKING:
    from services.registry.leases import Lease, LeaseTable

__all__ = ["Barrier", "EventHead", "Outbox", "apply_event", "merge", "record_of", "records"]


class _Ref(msgspec.Struct, frozen=True, gc=False):
    instance_id: str


_ref = msgspec.json.Decoder(_Ref).decode
_full = msgspec.json.Decoder(Instance).decode


class EventHead(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An `InstanceEvent` as a follower reads it: the instance is decoded only if needed.

    Followers read every event the leader publishes; most need only the id, so the
    instance's dates and metadata are skipped, not built.
    """

    kind: EventKind
    service: str
    instance: msgspec.Raw
    epoch: str = ""
    seq: int = 0

    @property
    def instance_id(self) -> str:
        return _ref(self.instance).instance_id

    def full(self) -> Instance:
        return _full(self.instance)


_SWEPT = frozenset({"unhealthy", "expired"})
_REMOVED = frozenset({"expired", "deregistered"})


class _Held(NamedTuple):
    kind: EventKind
    lease: Lease
    at: float
    slack: float


class Outbox:
    """A follower's changes that no leader event has covered yet, oldest first."""

    __slots__ = ("_held", "margin", "slack")

    def __init__(self, *, margin: float, slack: float) -> None:
        self.margin = margin  # a change older than the leader's last sign of life - margin
        self.slack = slack  # ... plus this, for sweep changes
        self._held: OrderedDict[tuple[str, str], _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, change: Change, now: float) -> None:
        kind, lease = change
        key = (lease.service, lease.instance_id)
        self._held.pop(key, None)  # one per instance: the latest state is what matters
        self._held[key] = _Held(kind, lease, now, self.slack if kind in _SWEPT else 0.0)

    def kind_of(self, service: str, instance_id: str) -> EventKind | None:
        held = self._held.get((service, instance_id))
        return held.kind if held else None

    def covered(self, service: str, instance_id: str) -> None:
        """The leader announced a change of this instance."""
        self._held.pop((service, instance_id), None)

    def prune(self, alive_at: float) -> None:
        """Drop what the leader, alive at `alive_at`, had time to announce itself.

        Oldest first, stopping at the first plain change too recent to drop: a storm of
        events costs a few steps each, not a walk over everything held.
        """
        limit = alive_at - self.margin
        drop = []
        for key, held in self._held.items():
            if held.at + held.slack < limit:
                drop.append(key)
            elif not held.slack:
                break  # later entries are newer still (sweep ones wait longer)
        for key in drop:
            del self._held[key]

    def take(self) -> list[Change]:
        """Everything held, oldest first, emptying the outbox (this replica now leads)."""
        taken = [Change(held.kind, held.lease) for held in self._held.values()]
        self._held.clear()
        return taken

    def clear(self) -> None:
        self._held.clear()


class Barrier:
    """Removals the leader heard itself wait for the next proof that it reaches the quorum.

    A deregistration may reach a leader in the moment between losing its quorum and
    noticing it; announced at once, it would speak for a fleet the leader no longer hears.
    So it waits until a lease write sent after it succeeds (`release(proved)`), at most one
    write interval. Every later change of the same service waits behind it: readers see
    each service's changes in order.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[Change, float]]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def needs(self, change: Change) -> bool:
        return change.kind == "deregistered" or change.lease.service in self._waiting

    def hold(self, change: Change, now: float) -> None:
        self._waiting.setdefault(change.lease.service, []).append((change, now))

    def release(self, proved: float) -> list[Change]:
        """The changes made before `proved` (a successful write's send time), in order."""
        out: list[Change] = []
        for service, queue in list(self._waiting.items()):
            n = 0
            while n < len(queue) and queue[n][1] < proved:
                n += 1
            out.extend(change for change, _ in queue[:n])
            del queue[:n]
            if not queue:
                del self._waiting[service]
        return out

    def take(self) -> list[Change]:
        """Everything waiting (this replica stopped leading: the outbox takes it)."""
        out = [change for queue in self._waiting.values() for change, _ in queue]
        self._waiting.clear()
        return out


def apply_event(
    table: LeaseTable, event: EventHead, instance_id: str, mono: float, wall: float
) -> None:
    """Bring a follower's table to what the leader announced.

    Registrations and heartbeats reach the follower themselves; the leader's sweep
    decisions (unhealthy, expired) and removals do not, or may arrive first.
    """
    service = event.service
    if event.kind in _REMOVED:
        table.remove(service, instance_id)
        return
    lease = table.get(service, instance_id)
    if lease is None:
        if event.kind in {"unhealthy", "drained"}:
            return  # it went meanwhile (a deregistration already handled)
        # announced before its registration reached us (another route): take the event's
        instance = event.full()
        reg = Registration(
            instance_id=instance.instance_id,
            host=instance.host,
            port=instance.port,
            weight=instance.weight,
            zone=instance.zone,
            version=instance.version,
            metadata=instance.metadata,
            ttl_s=instance.ttl_s,
            checks=instance.checks,
        )  # its warning_weight is not in the event: the registration brings it
        table.register(service, reg, mono, wall)
        return
    if event.kind == "unhealthy":
        table.set_health(lease, healthy=False)
    elif event.kind == "healthy":
        table.set_health(lease, healthy=True)


def record_of(lease: Lease, mono: float, held: EventKind | None = None) -> LeaseRecord:
    return LeaseRecord(
        service=lease.service,
        instance_id=lease.instance_id,
        host=lease.host,
        port=lease.port,
        weight=lease.weight,
        zone=lease.zone,
        version=lease.version,
        metadata=lease.metadata,
        ttl_s=lease.ttl,
        healthy=lease.healthy,
        age_s=max(0.0, mono - lease.seen),
        registered_at=lease.registered_at,
        last_seen=lease.last_seen,
        inflight=lease.inflight,
        cpu=lease.cpu,
        mem=lease.mem,
        latency_ms=lease.latency_ms,
        held=held,
        checks=lease.checks,
        warning_weight=lease.warning_weight,
    )


def _key(service: str, instance_id: str) -> str:
    return f"{service}/{instance_id}"  # "/" is in no name, so it sorts service first


def records(
    table: LeaseTable, after: str, limit: int, mono: float, outbox: Outbox | None = None
) -> tuple[list[LeaseRecord], str]:
    """One page of the table in (service, instance) order, and the `after` of the next.

    Each record says what `outbox` holds unannounced for it.
    """
    keys = sorted(
        _key(service, iid)
        for service, leases in table.services.items()
        for iid in leases
        if _key(service, iid) > after
    )
    page: list[LeaseRecord] = []
    for key in keys[:limit]:
        service, _, iid = key.partition("/")
        lease = table.get(service, iid)
        if lease is not None:
            held = outbox.kind_of(service, iid) if outbox is not None else None
            page.append(record_of(lease, mono, held))
    return page, (keys[limit - 1] if len(keys) > limit else "")


def merge(
    table: LeaseTable,
    page: list[LeaseRecord],
    mono: float,
    gone: set[tuple[str, str]],
    outbox: Outbox | None = None,
) -> int:
    """Take a peer's leases where they are news: missing here, or heard from more recently.

    `gone` holds what this replica saw removed while it caught up (the page may be older
    than that removal). What the peer holds unannounced goes into `outbox` as well, so it
    is announced whichever of the two wins the lease. Returns how many leases were taken.
    """
    taken = 0
    for rec in page:
        if (rec.service, rec.instance_id) in gone:
            continue
        taken += _take_if_newer(table, rec, mono)
        if rec.held is not None and outbox is not None:
            lease = table.get(rec.service, rec.instance_id)
            if lease is not None and outbox.kind_of(rec.service, rec.instance_id) is None:
                outbox.hold(Change(rec.held, lease), mono)
    return taken


def _take_if_newer(table: LeaseTable, rec: LeaseRecord, mono: float) -> int:
    seen = mono - rec.age_s
    mine = table.get(rec.service, rec.instance_id)
    if mine is not None and mine.seen >= seen:
        return 0
    reg = Registration(
        instance_id=rec.instance_id,
        host=rec.host,
        port=rec.port,
        weight=rec.weight,
        zone=rec.zone,
        version=rec.version,
        metadata=rec.metadata,
        ttl_s=rec.ttl_s,
        checks=rec.checks,
        warning_weight=rec.warning_weight,
    )
    lease = table.adopt(
        rec.service,
        reg,
        seen=seen,
        wall=rec.last_seen,
        registered_at=rec.registered_at,
        healthy=rec.healthy,
    )
    lease.inflight = rec.inflight
    lease.cpu, lease.mem, lease.latency_ms = rec.cpu, rec.mem, rec.latency_ms
    return 1
