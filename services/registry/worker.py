"""The registry worker: answers the registry subjects and publishes every change.

State is in memory, in every replica: each hears every registration and heartbeat, and
its role (services/registry/role.py, carried out on the bus by replica.py) says what it
may do with them: the leading replica publishes the changes and answers. A replica that
starts or comes back copies a peer's table first. After a restart of every replica,
instances come back by themselves: their SDK's next heartbeat is answered 404 and the SDK
registers again, so the fleet is whole within one heartbeat interval. Snapshots say
`settled: false` until `settle_s` has passed, so that a reader (the balancer) does not
take a half-filled registry for the truth.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import secrets
import time
from typing import TYPE_CHECKING, Annotated, get_args

import msgspec
from msgspec import Meta, Struct

from schemas import subjects
from schemas.checks import CheckResult, validate_checks, worst
from schemas.fields import from_timestamp, utcnow
from schemas.governor import ConfigApplied, InstanceOverride, ServiceConfig
from schemas.registry import (
    Ack,
    Deregistration,
    Empty,
    EventKind,
    Heartbeat,
    Instance,
    InstanceEvent,
    InstanceList,
    InstancesQuery,
    Registration,
    ServiceList,
)
from services.configlog import ConfigWatch
from services.errors import BadRequest, NotFound
from services.lifecycle import Lifecycle
from services.registry.checks import CheckTable
from services.registry.leases import Change, Lease, LeaseTable
from services.registry.replica import Replica
from services.registry.role import Role

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["Registry", "RegistrySettings"]


class RegistrySettings(Struct, frozen=True, kw_only=True):
    """Environment: REGISTRY_<FIELD>, e.g. REGISTRY_SWEEP_S=0.05."""

    # how often leases are checked: detection is at most ttl_s + sweep_s late
    sweep_s: Annotated[float, Meta(gt=0, le=5)] = 0.1
    # after a start, how long until every live instance has been heard from
    settle_s: Annotated[float, Meta(ge=0)] = 20.0
    # hold expiry back while more than this share of instances is silent (0 = never)
    expiry_guard: Annotated[float, Meta(ge=0, le=1)] = 0.5
    # ... but only with at least this many instances registered
    expiry_guard_min: Annotated[int, Meta(ge=1)] = 10
    # a gap between sweeps longer than this was the registry's pause, not the fleet's
    pause_s: Annotated[float, Meta(gt=0)] = 2.0
    # at start, wait at most this long for the operators' config before serving
    config_wait_s: Annotated[float, Meta(ge=0)] = 5.0
    # replicas: the leader lease (the KV bucket's max_age; the bucket's creator sets it)
    leader_lease_s: Annotated[float, Meta(ge=1, le=60)] = 4.0
    # let a registration's health checks probe any host, not only the instance's own
    # (set it with PROBER_ALLOW_ANY_TARGET on the prober: docs/prober.md)
    allow_any_target: bool = False


_LOG_EVENTS = {kind: "instance." + kind for kind in get_args(EventKind)}


_NO_OVERRIDE = InstanceOverride()


def _instance(
    lease: Lease, override: InstanceOverride = _NO_OVERRIDE, checks: CheckTable | None = None
) -> Instance:
    """The instance as everyone sees it: what it registered, with the operator's overrides,
    and its health: the worst of its lease and its active checks (critical: not healthy,
    so out of every answer; warning: in, at its warning weight)."""
    metadata = lease.metadata
    if override.metadata:
        metadata = {**metadata, **override.metadata}
    by_checks = checks.health(lease.service, lease.instance_id) if checks else "passing"
    health = worst(["passing" if lease.healthy else "critical", by_checks])
    weight = lease.weight if override.weight is None else override.weight
    if health == "warning" and lease.warning_weight is not None:
        weight = lease.warning_weight
    return Instance(
        instance_id=lease.instance_id,
        host=lease.host,
        port=lease.port if override.port is None else override.port,
        weight=weight,
        zone=lease.zone,
        version=lease.version,
        metadata=metadata,
        healthy=health != "critical",
        drained=bool(override.drained),
        inflight=lease.inflight,
        registered_at=from_timestamp(lease.registered_at),
        last_seen=from_timestamp(lease.last_seen),
        ttl_s=lease.ttl,
        cpu=lease.cpu,
        mem=lease.mem,
        latency_ms=lease.latency_ms,
        checks=lease.checks,
        health=health,
        check_states=checks.states(lease.service, lease.instance_id) if checks else [],
    )


def _check_service(service: str, claimed: str | None) -> None:
    if claimed is not None and claimed != service:
        raise BadRequest(
            f"payload names service {claimed!r} but the subject names {service!r}; "
            "the subject decides: drop `service` from the payload or publish on its subject"
        )


class Registry(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        settings: RegistrySettings,
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.clock = clock
        self.wallclock = wallclock
        self.table = LeaseTable(
            guard_ratio=settings.expiry_guard,
            guard_min=settings.expiry_guard_min,
            pause_s=settings.pause_s,
        )
        self.role = Role(
            secrets.token_hex(4),
            lease_s=settings.leader_lease_s,
            settle_s=settings.settle_s,
            started=clock(),
            linked=lambda: bus.connected,
            mint=lambda: secrets.token_hex(6),
        )
        # listed (queue group `registry`) only while the role lists: caught up, in touch
        instances = functools.partial(
            bus.serve,
            subjects.INSTANCES,
            InstancesQuery,
            self._on_instances,
            queue="registry",
            per_service=True,
        )
        services = functools.partial(
            bus.serve, subjects.SERVICES, Empty, self._on_services, queue="registry"
        )
        self.replica = Replica(
            bus,
            self.table,
            self.role,
            log,
            clock=clock,
            wallclock=wallclock,
            publish=self._publish,
            listings=(instances, services),
        )
        self.configs: dict[str, ServiceConfig] = {}
        self._drained_told: set[tuple[str, str]] = set()  # `drained` already announced
        self.checks = CheckTable()  # the prober's results, combined into health
        self.config = ConfigWatch(bus, log, self._on_config)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.enter(self.config)
        # overrides apply from the first answer, also after a restart
        await self.config.loaded(self.settings.config_wait_s)
        # Every replica hears every change (no queue group), from before it catches up.
        serve = self.owned(self.bus.serve)
        await serve(subjects.REGISTER, Registration, self._on_register, per_service=True)
        await serve(subjects.HEARTBEAT, Heartbeat, self._on_heartbeat, per_service=True)
        await serve(subjects.DEREGISTER, Deregistration, self._on_deregister, per_service=True)
        await serve(
            subjects.PROBER_TRANSITIONS,
            CheckResult,
            self._on_check_result,
            answer=False,
            per_service=True,
        )
        await self.enter(self.replica)
        self.on_close(self._flush_held)  # before the replica lets its lease go
        self.spawn(self._sweep_loop(), "registry.sweep")
        self.log.info(
            "registry.ready",
            epoch=self.epoch,
            replica=self.role.id,
            leader=self.role.publishes(self.clock()),
        )

    async def _flush_held(self) -> None:
        """A graceful stop: what waits for a proof of quorum goes out now, if leading."""
        for change in self.role.stopping(self.clock()):
            await self._publish(change)

    @property
    def epoch(self) -> str:
        return self.role.epoch

    @property
    def seq(self) -> int:
        return self.role.seq

    @property
    def settled(self) -> bool:
        return self.role.settled(self.clock())

    # -- handlers ------------------------------------------------------------------------
    # Every replica applies every message; only a replica whose role `answers()` replies
    # (a handler returning None sends nothing), so a requester hears one answer, or a few
    # while a dead leader's lease runs out.
    async def _on_register(self, service: str, reg: Registration) -> Ack | None:
        now = self.clock()
        answer = self.role.answers(now)
        if reg.service is not None and reg.service != service:
            if not answer:
                return None
            _check_service(service, reg.service)
        if reg.checks:
            try:
                checks = validate_checks(
                    reg.checks, reg.host, allow_any_target=self.settings.allow_any_target
                )
            except BadRequest:
                if not answer:
                    return None
                raise
            ttl = [c.ttl_s for c in checks if c.kind == "ttl"]  # a ttl check is the lease
            reg = msgspec.structs.replace(reg, checks=checks, ttl_s=ttl[0] if ttl else reg.ttl_s)
        change = self.table.register(service, reg, now, self.wallclock())
        if change or reg.checks:
            self.checks.define(service, reg.instance_id, reg.checks, now)
        self.role.heard(service, reg.instance_id)
        if change:
            await self._announce(change)
        if not answer:
            return None
        return Ack(instance_id=reg.instance_id, ttl_s=reg.ttl_s, heartbeat_s=reg.ttl_s / 3)

    async def _on_heartbeat(self, service: str, hb: Heartbeat) -> Ack | None:
        # The hot path: every instance, every few seconds. One look-up, no event unless
        # the lease changed state.
        now = self.clock()
        answer = self.role.answers(now)
        if hb.service is not None and hb.service != service:
            if not answer:
                return None
            _check_service(service, hb.service)
        lease = self.table.get(service, hb.instance_id)
        if lease is None:
            if not answer:
                return None
            raise NotFound(
                f"instance {hb.instance_id!r} of service {service!r} is not registered "
                "(it expired or the registry restarted); register it again"
            )
        change = self.table.renew(lease, hb, now, self.wallclock())
        if change:
            await self._announce(change)
            if self.table.get(service, hb.instance_id) is not lease:  # gone meanwhile
                return Ack(instance_id=hb.instance_id) if answer else None
        ttl = lease.ttl
        if lease.inflight == 0 and service in self.configs and self._override(lease).drained:
            key = (service, lease.instance_id)
            if key not in self._drained_told:  # once per drain: now it is safe to stop
                self._drained_told.add(key)
                await self._announce(Change("drained", lease))
        if not answer:
            return None
        return Ack(instance_id=hb.instance_id, ttl_s=ttl, heartbeat_s=ttl / 3)

    async def _on_deregister(self, service: str, dereg: Deregistration) -> Ack | None:
        answer = self.role.answers(self.clock())
        if dereg.service is not None and dereg.service != service:
            if not answer:
                return None
            _check_service(service, dereg.service)
        change = self.table.deregister(service, dereg.instance_id)
        self.role.removed(service, dereg.instance_id)
        if change:
            await self._announce(change)
        return Ack(instance_id=dereg.instance_id) if answer else None

    async def _on_instances(self, service: str, query: InstancesQuery) -> InstanceList:
        leases = self.table.leases(service)
        if not leases:
            raise NotFound(
                f"service {service!r} has no registered instances; "
                "registry.v1.services lists the known ones"
            )
        next_after = ""
        if query.limit or query.after:
            leases.sort(key=lambda lease: lease.instance_id)
            start = bisect.bisect_right([lease.instance_id for lease in leases], query.after)
            end = start + query.limit if query.limit else len(leases)
            next_after = leases[end - 1].instance_id if end < len(leases) else ""
            leases = leases[start:end]
        return InstanceList(
            service=service,
            instances=[_instance(lease, self._override(lease), self.checks) for lease in leases],
            next_after=next_after,
            epoch=self.epoch,
            seq=self.seq,
            settled=self.settled,
        )

    async def _on_services(self, _subject: str, _: Empty) -> ServiceList:
        return ServiceList(
            services=sorted(self.table.services),
            epoch=self.epoch,
            seq=self.seq,
            settled=self.settled,
            replica=self.role.id,
            leader=self.role.leader,
        )

    # -- events and time -----------------------------------------------------------------
    def _override(self, lease: Lease) -> InstanceOverride:
        config = self.configs.get(lease.service)
        found = config.instances.get(lease.instance_id) if config else None
        return found or _NO_OVERRIDE

    async def _on_config(self, entry: ConfigApplied) -> None:
        """Apply an operator's change to what the registry says about its instances."""
        service = entry.service
        before = self.configs.get(service)
        self.configs[service] = entry.config
        if entry.kind == "delete":
            # Instances registered before the delete go; one registered after it (by
            # a restarted registry replaying the log) stays.
            cutoff = entry.at.timestamp()
            for lease in self.table.leases(service):
                if lease.registered_at <= cutoff:
                    change = self.table.deregister(service, lease.instance_id)
                    if change:
                        await self._announce(change)
            return
        old = before.instances if before else {}
        new = entry.config.instances
        for instance_id in old.keys() | new.keys():
            if old.get(instance_id) == new.get(instance_id):
                continue
            if not (new.get(instance_id) or _NO_OVERRIDE).drained:
                self._drained_told.discard((service, instance_id))
            current = self.table.get(service, instance_id)
            if current is not None:
                await self._announce(Change("updated", current))

    async def _on_check_result(self, service: str, result: CheckResult) -> None:
        """A check's transition or refresh (the prober sends nothing else here): a new
        status is announced as `updated` (health, weight, states)."""
        lease = self.table.get(service, result.instance_id)
        if lease is None:
            return
        now = self.clock()
        if not self.checks.knows(service, lease.instance_id):  # copied from a peer's table
            self.checks.define(service, lease.instance_id, lease.checks, now)
        if not self.checks.record(service, result, now):
            return
        self.log.info(
            "check.status_changed",
            service=service,
            instance=result.instance_id,
            check=result.check_id,
            status=result.status,
        )
        await self._announce(Change("updated", lease))

    async def _reap_critical(self) -> None:
        """Remove the instances critical for their deregister_critical_after_s."""
        for service, instance_id in self.checks.overdue(self.clock()):
            change = self.table.deregister(service, instance_id)
            self.checks.forget(service, instance_id)
            if change:
                self.log.info("check.deregistered_critical", service=service, instance=instance_id)
                await self._announce(change)

    async def _announce(self, change: Change) -> None:
        kind, lease = change
        if kind in ("expired", "deregistered"):
            self.checks.forget(lease.service, lease.instance_id)
            self._drained_told.discard((lease.service, lease.instance_id))
        if self.role.announce(change, self.clock()) is not None:
            await self._publish(change)

    async def _publish(self, change: Change) -> None:
        kind, lease = change
        seq = self.role.next_seq()
        event = InstanceEvent(
            kind=kind,
            service=lease.service,
            instance=_instance(lease, self._override(lease), self.checks),
            at=utcnow(),
            epoch=self.epoch,
            seq=seq,
        )
        await self.bus.publish(subjects.events(lease.service), event)
        self.log.info(
            _LOG_EVENTS[kind],
            service=lease.service,
            instance=lease.instance_id,
            seq=seq,
        )

    async def _sweep_loop(self) -> None:
        guarding = False
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            now = self.clock()
            horizon = self.role.horizon(now)  # only what this replica can vouch for
            try:
                for change in self.role.release(now):  # what waited for a proof of quorum
                    await self._publish(change)
                if horizon is not None:
                    for change in self.table.sweep(self.clock(), horizon):
                        await self._announce(change)
                await self._reap_critical()
            except Exception:  # a bug in one sweep must not end leases for good
                self.log.exception("registry.sweep_failed")
            if self.table.guarding != guarding:
                guarding = self.table.guarding
                (self.log.warning if guarding else self.log.info)(
                    "registry.expiry_guard_on" if guarding else "registry.expiry_guard_off",
                    silent=self.table.unhealthy,
                    total=self.table.total,
                    held=self.table.held,
                )
