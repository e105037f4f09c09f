"""The registry's lease table: pure logic, no bus, clocks passed in.

Leases run on the monotonic clock: an instance silent for `ttl_s` turns unhealthy, one
silent for 2 x `ttl_s` expires. A heartbeat costs two dict look-ups; deadlines sit in a
heap that is checked lazily, so a sweep touches only leases whose deadline has passed.

Two guards keep a fault of the registry or the network from emptying the registry:
- expiry guard (after Eureka's self-preservation): while more than `guard_ratio` of all
  instances are silent, silent instances stay listed as unhealthy instead of expiring;
  they are never resolved either way, and expiry resumes once the share falls.
- pause compensation: a gap between sweeps longer than `pause_s` (the registry was
  stopped, starved or suspended) is credited to every lease, not blamed on the fleet.
"""

from __future__ import annotations

import heapq
import math
from sys import intern
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from services.errors import NotFound
from services.registry.checks import needs_heartbeats

if TYPE_CHECKING:
    from schemas.registry import EventKind, Heartbeat, Registration

__all__ = ["Change", "Lease", "LeaseTable", "UnknownInstanceError"]

K = TypeVar("K")
V = TypeVar("V")


class UnknownInstanceError(NotFound, KeyError):
    """A heartbeat for an instance the table does not hold (never registered, or expired)."""


class Lease:
    """One registered instance: its registration, its lease and its last reported load."""

    __slots__ = (
        "checks",
        "cpu",
        "gen",
        "healthy",
        "heartbeats",
        "host",
        "inflight",
        "instance_id",
        "last_seen",
        "latency_ms",
        "mem",
        "metadata",
        "port",
        "registered_at",
        "seen",
        "service",
        "ttl",
        "version",
        "warning_weight",
        "weight",
        "zone",
    )

    def __init__(
        self, service: str, reg: Registration, mono: float, wall: float, shared: SharedValues
    ) -> None:
        self.service = service
        self.instance_id = reg.instance_id
        self.registered_at = wall
        self.gen = 0
        self.healthy = True
        self.inflight = 0
        self.cpu: float | None = None
        self.mem: float | None = None
        self.latency_ms: float | None = None
        self.apply(reg, shared)
        self.touch(mono, wall)

    def apply(self, reg: Registration, shared: SharedValues) -> None:
        self.host = intern(reg.host)
        self.port = shared.port(reg.port)
        self.weight = reg.weight
        self.zone = intern(reg.zone)
        self.version = intern(reg.version)
        self.metadata = shared.metadata(reg.metadata)
        self.ttl = shared.ttl(reg.ttl_s)
        self.checks = reg.checks  # active health checks the prober runs (validated)
        self.warning_weight = reg.warning_weight
        # checks and no ttl check: the prober's checks keep it, no heartbeat is due
        self.heartbeats = needs_heartbeats(reg.checks)

    def same_as(self, reg: Registration) -> bool:
        return (
            self.host == reg.host
            and self.port == reg.port
            and self.weight == reg.weight
            and self.zone == reg.zone
            and self.version == reg.version
            and self.metadata == reg.metadata
            and self.ttl == reg.ttl_s
            and self.checks == reg.checks
            and self.warning_weight == reg.warning_weight
        )

    def touch(self, mono: float, wall: float) -> None:
        self.seen = mono
        self.last_seen = wall

    def due(self) -> float:
        """Monotonic time of this lease's next state change if it stays silent."""
        if not self.heartbeats:
            return math.inf  # kept by its checks (services/registry/checks.py)
        return self.seen + (self.ttl if self.healthy else 2 * self.ttl)

    def __lt__(self, other: Lease) -> bool:
        # Deadline heap entries that tie on (due, gen) need some order; any will do.
        return id(self) < id(other)


class SharedValues:
    """One object for each value many leases hold alike: ports, ttls, metadata.

    Fleets repeat themselves (one port, one ttl, one metadata per service), so at 100,000
    instances sharing saves hundreds of bytes a lease. Strings go through `sys.intern`.
    Each cache is bounded: values that never repeat cost a clear now and then, not memory.
    The shared metadata dicts are never mutated (whoever changes one copies it).
    """

    __slots__ = ("_limit", "metadata_of", "ports", "ttls")

    def __init__(self, limit: int = 65_536) -> None:
        self.ports: dict[int, int] = {}
        self.ttls: dict[float, float] = {}
        self.metadata_of: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._limit = limit

    def port(self, value: int) -> int:
        return _shared(self.ports, value, value, self._limit)

    def ttl(self, value: float) -> float:
        return _shared(self.ttls, value, value, self._limit)

    def metadata(self, value: dict[str, str]) -> dict[str, str]:
        key = tuple(value.items())
        found = self.metadata_of.get(key)
        if found is None:
            found = {intern(k): intern(v) for k, v in value.items()}
        return _shared(self.metadata_of, key, found, self._limit)


def _shared(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """The object `cache` shares for `key`: `value`, if it is the first (a full cache is
    emptied first)."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= limit:
            cache.clear()
        found = cache[key] = value
    return found


class Change(NamedTuple):
    kind: EventKind
    lease: Lease


class LeaseTable:
    def __init__(
        self,
        *,
        guard_ratio: float = 0.5,
        guard_min: int = 10,
        pause_s: float = 2.0,
    ) -> None:
        self.services: dict[str, dict[str, Lease]] = {}
        self.guard_ratio = guard_ratio
        self.guard_min = guard_min
        self.pause_s = pause_s
        self.total = 0
        self.unhealthy = 0
        self.guarding = False  # expiry is being held back right now
        self.held = 0  # expiries held back by the guard in the last sweep
        # (due, gen, lease): an entry is live while its gen is the lease's (3-tuples: the
        # heap holds one per lease, and at 100,000 leases every byte counts)
        self._heap: list[tuple[float, int, Lease]] = []
        self.shared = SharedValues()
        self._last_sweep: float | None = None

    # -- lookups -------------------------------------------------------------------------
    def get(self, service: str, instance_id: str) -> Lease | None:
        leases = self.services.get(service)
        return leases.get(instance_id) if leases else None

    def leases(self, service: str) -> list[Lease]:
        return list(self.services.get(service, {}).values())

    # -- changes from the fleet ----------------------------------------------------------
    def register(self, service: str, reg: Registration, mono: float, wall: float) -> Change | None:
        """Add or refresh an instance; the change to announce, or None if nothing changed."""
        service = intern(service)  # every lease of the service holds this one name
        leases = self.services.setdefault(service, {})
        lease = leases.get(reg.instance_id)
        if lease is None:
            lease = leases[reg.instance_id] = Lease(service, reg, mono, wall, self.shared)
            self.total += 1
            self._schedule(lease)
            return Change("registered", lease)
        lease.touch(mono, wall)
        changed = not lease.same_as(reg)
        revived = not lease.healthy
        if revived:  # before scheduling: a healthy lease is due at ttl, not 2 x ttl
            self._set_healthy(lease, healthy=True)
        if changed:
            lease.apply(reg, self.shared)
            self._schedule(lease)  # the ttl may have shortened
        if revived:
            return Change("updated" if changed else "healthy", lease)
        return Change("updated", lease) if changed else None

    def heartbeat(self, service: str, hb: Heartbeat, mono: float, wall: float) -> Change | None:
        lease = self.get(service, hb.instance_id)
        if lease is None:
            raise UnknownInstanceError(hb.instance_id)
        return self.renew(lease, hb, mono, wall)

    def renew(self, lease: Lease, hb: Heartbeat, mono: float, wall: float) -> Change | None:
        """A heartbeat for a lease the table holds (the caller looked it up)."""
        lease.touch(mono, wall)
        if hb.inflight is not None:
            lease.inflight = hb.inflight
        if hb.cpu is not None:
            lease.cpu = hb.cpu
        if hb.mem is not None:
            lease.mem = hb.mem
        if hb.latency_ms is not None:
            lease.latency_ms = hb.latency_ms
        if not lease.healthy:
            self._set_healthy(lease, healthy=True)
            return Change("healthy", lease)
        return None

    def deregister(self, service: str, instance_id: str) -> Change | None:
        lease = self._remove(service, instance_id)
        return Change("deregistered", lease) if lease else None

    def remove_service(self, service: str) -> list[Change]:
        return [
            Change("deregistered", lease)
            for iid in list(self.services.get(service, {}))
            if (lease := self._remove(service, iid)) is not None
        ]

    # -- time ----------------------------------------------------------------------------
    def sweep(self, mono: float, horizon: float | None = None) -> list[Change]:
        """Apply every deadline that has passed by `mono`; the changes to announce.

        With `horizon`, only deadlines up to it: silence after it is not yet judged (a
        replica that cannot prove it still hears the fleet sweeps up to its last proof).
        """
        last, self._last_sweep = self._last_sweep, mono
        if last is not None and mono - last > self.pause_s:
            self.credit(mono - last, mono)
        until = mono if horizon is None else min(mono, horizon)
        changes: list[Change] = []
        held: list[Lease] = []
        heap = self._heap
        while heap and heap[0][0] <= until:
            _, gen, lease = heapq.heappop(heap)
            if gen != lease.gen or self.get(lease.service, lease.instance_id) is not lease:
                continue  # superseded by a later schedule, or removed
            due = lease.due()
            if due > until:
                heapq.heappush(heap, (due, gen, lease))
            elif lease.healthy:
                self._set_healthy(lease, healthy=False)
                heapq.heappush(heap, (lease.due(), gen, lease))
                changes.append(Change("unhealthy", lease))
            else:
                held.append(lease)
        self.guarding = self._guard_holds()
        self.held = len(held) if self.guarding else 0
        for lease in held:
            if self.guarding:  # check again soon: the share may fall
                heapq.heappush(heap, (mono + 1.0, lease.gen, lease))
            elif self._remove(lease.service, lease.instance_id) is not None:
                changes.append(Change("expired", lease))
        return changes

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # -- internals -----------------------------------------------------------------------
    def _guard_holds(self) -> bool:
        return (
            self.guard_ratio > 0
            and self.total >= self.guard_min
            and self.unhealthy > self.guard_ratio * self.total
        )

    # -- replication: what another replica decided ---------------------------------------
    def set_health(self, lease: Lease, *, healthy: bool) -> bool:
        """Mark `lease` as the leader announced it; True if that changed it."""
        if lease.healthy == healthy:
            return False
        self._set_healthy(lease, healthy=healthy)
        self._schedule(lease)
        return True

    def remove(self, service: str, instance_id: str) -> Lease | None:
        return self._remove(service, instance_id)

    def adopt(  # a lease as a peer holds it
        self,
        service: str,
        reg: Registration,
        *,
        seen: float,
        wall: float,
        registered_at: float,
        healthy: bool,
    ) -> Lease:
        """Add or overwrite a lease with a peer's view of it (a catch-up snapshot)."""
        self.register(service, reg, seen, wall)
        lease = self.services[intern(service)][reg.instance_id]
        lease.registered_at = registered_at
        lease.touch(seen, wall)
        self.set_health(lease, healthy=healthy)
        self._schedule(lease)
        return lease

    def credit(self, gap: float, mono: float) -> None:
        """Credit `gap` seconds to every lease: time the registry could not hear the fleet.

        Never past now: a lease heard from during the gap (messages handled before this
        sweep) is as fresh as it gets, and must not run `gap` longer than its ttl.
        """
        for leases in self.services.values():
            for lease in leases.values():
                lease.seen = min(lease.seen + gap, mono)

    def _schedule(self, lease: Lease) -> None:
        lease.gen += 1
        heapq.heappush(self._heap, (lease.due(), lease.gen, lease))

    def _set_healthy(self, lease: Lease, *, healthy: bool) -> None:
        lease.healthy = healthy
        self.unhealthy += -1 if healthy else 1

    def _remove(self, service: str, instance_id: str) -> Lease | None:
        leases = self.services.get(service)
        lease = leases.pop(instance_id, None) if leases is not None else None
        if lease is None:
            return None
        self.total -= 1
        if not lease.healthy:
            self.unhealthy -= 1
        if not leases:
            del self.services[service]
        return lease
