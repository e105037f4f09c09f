"""The balancer worker: answers resolve requests from its own pools over the fleet.

The pools follow the fleet's read model (services/view/: the registry's instances, the
config log, the stored ejections; the gateway reads the same model), plus heartbeats
(load) and call reports (latency, the end of a pick's time in flight, and failures for
outlier ejection: ejector.py). The model tells each change; resolve reads only the pools.
Resolve is served in the queue group `balancer`, so replicas share the requests; each
replica follows every event, heartbeat and report.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import secrets
import time
from typing import TYPE_CHECKING, Annotated

from msgspec import Meta, Struct

from schemas import subjects
from schemas.balancer import (
    BatchedReport,
    CallReport,
    CallReports,
    Ejections,
    PickCount,
    PickCounts,
    ResolveRequest,
)
from schemas.registry import Empty, Heartbeat
from services.balancer import outliers
from services.balancer.ejector import Ejector, ensure_outlier_stream
from services.balancer.pool import Pool
from services.balancer.replies import ReplyCache
from services.errors import NotFound
from services.lifecycle import Lifecycle
from services.view import RegistryView

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from schemas.governor import ServiceConfig
    from services.balancer.members import Member
    from services.bus import Bus
    from services.configlog import ConfigWatch
    from services.view import Change, RegistrySync

__all__ = ["Balancer", "BalancerSettings"]

_NONE: frozenset[str] = frozenset()
REAP_S = 0.2  # expired picks are closed this often
REAP_SLICE = 512  # and this many at a time between other work


class BalancerSettings(Struct, frozen=True, kw_only=True):
    """Environment: BALANCER_<FIELD>, e.g. BALANCER_PICK_TIMEOUT_S=10."""

    # a pick counts as in flight until its call report, or this long
    pick_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    # deadline of each request to the registry while reading a snapshot
    registry_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    # a full snapshot this often even when no event was missed (anti-entropy)
    resync_s: Annotated[float, Meta(gt=0)] = 300.0
    # a failed call counts as at least this slow for least_response_time, so an
    # instance that fails fast does not attract traffic, and one whose calls time out
    # counts as slower than the timeout (5 s: Linkerd's load-biaser default; 1 s let a
    # 20x slow instance keep ~1 % of the traffic in the balancing simulation)
    failure_penalty_ms: Annotated[float, Meta(ge=0)] = 5000.0
    # at start, wait at most this long for the operators' config before serving
    config_wait_s: Annotated[float, Meta(ge=0)] = 5.0
    # publish pick counts per service on balancer.v1.picks.{service} this often (0 = never)
    picks_s: Annotated[float, Meta(ge=0)] = 1.0
    # JetStream replicas of the ejection state (stream BATON_OUTLIERS; 3 in a cluster)
    outlier_replicas: Annotated[int, Meta(ge=1, le=5)] = 1


class Balancer(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        settings: BalancerSettings,
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
        self.pools: dict[str, Pool] = {}
        self.node = secrets.token_hex(4)  # prefixes this replica's pick tokens
        self._prefix = self.node + "."
        self._picks = itertools.count(1)  # pick tokens: node.1, node.2, ...
        # picks not yet reported, oldest first: when, token, member, one deque each. No
        # tuple a pick: each would count towards a garbage collection (one every 700
        # resolves), and a queue of some hundred thousand for it to walk.
        self._open_at: collections.deque[float] = collections.deque()
        self._open_tokens: collections.deque[str] = collections.deque()
        self._open_members: collections.deque[Member] = collections.deque()
        self.replies = ReplyCache()  # also counts the picks, for the collector
        replicas = settings.outlier_replicas
        self.view = RegistryView.for_worker(
            bus,
            log,
            settings,
            name="balancer",
            wallclock=wallclock,
            prepare_outliers=lambda: ensure_outlier_stream(bus, replicas=replicas),
        )
        self.view.subscribe(self._on_change)
        self.ejector = Ejector(
            bus,
            self.pools,
            self.view,
            log,
            node=self.node,
            wallclock=wallclock,
            timeout_s=settings.registry_timeout_s,
        )

    @property
    def configs(self) -> dict[str, ServiceConfig]:
        """Each service's config, as the read model has it."""
        return self.view.configs

    @property
    def config(self) -> ConfigWatch:
        """The read model's follower of the config log."""
        return self.view.config

    @property
    def sync(self) -> RegistrySync:
        """The read model's copy of the registry (tests await its first snapshot)."""
        return self.view.sync

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.enter(self.ejector)
        serve = self.owned(self.bus.serve)
        await serve(
            subjects.HEARTBEAT, Heartbeat, self._on_heartbeat, answer=False, per_service=True
        )
        await serve(subjects.REPORT, CallReport, self._on_report, per_service=True)
        await serve(subjects.REPORTS, CallReports, self._on_reports, per_service=True)
        # the model loads the config and the ejections in force before it syncs the
        # registry, so a service's strategy and ejections apply from the first answer
        await self.enter(self.view)
        await serve(
            subjects.RESOLVE, ResolveRequest, self._on_resolve, queue="balancer", per_service=True
        )
        await serve(
            subjects.EJECTIONS, Empty, self._on_ejections, queue="balancer", per_service=True
        )
        self.spawn(self._reap_loop(), "balancer.reap")
        if self.settings.picks_s > 0:
            self.spawn(self._picks_loop(), "balancer.picks")
        self.log.info("balancer.ready", node=self.node)

    # -- the fleet, as the read model tells it --------------------------------------------
    def _on_change(self, change: Change) -> None:
        service = change.service
        pool = self.pools.get(service)
        if change.kind == "instance":
            state = self.view.service(service)
            if state is None:
                return
            if pool is None:
                pool = self.pools[service] = Pool(service, wallclock=self.wallclock)
                config = self.view.configs.get(service)
                if config is not None:
                    pool.configure(config)
                self.ejector.apply(service)
            self.replies.forget(pool.upsert(state.instances[change.instance_id]))
        elif pool is None:
            return
        elif change.kind == "removed":
            self.replies.forget(pool.remove(change.instance_id))
            if not pool.members:
                del self.pools[service]
        elif change.kind == "config":
            pool.configure(self.view.configs[service])
            self.ejector.apply(service)  # enabled may have changed
        else:  # ejections
            self.ejector.apply(service)

    def known(self) -> dict[str, set[str]]:
        """The instance ids each pool holds, by service."""
        return {service: set(pool.members) for service, pool in self.pools.items()}

    # -- handlers ------------------------------------------------------------------------
    def _on_resolve(self, service: str, req: ResolveRequest) -> bytes:
        pool = self.pools.get(service)
        if pool is None:
            raise NotFound(
                f"service {service!r} has no registered instances; "
                "check the name, or start an instance that registers it"
            )
        now = self.clock()
        # Most requests name nothing: the pool's fast picker, asked directly, saves a call
        # and a tuple on a path whose cost is counted in calls.
        fast = pool.fast
        member = None
        if fast is not None and req.strategy is None and not req.zone and not req.exclude:
            member = fast.pick(req.key, _NONE, now)
            strategy, panic = pool.strategy, pool.held
        if member is None:
            exclude = frozenset(req.exclude) if req.exclude else _NONE
            member, strategy, panic = pool.pick(req.strategy, req.key, req.zone, exclude, now)
        if not req.track:  # no report will close it: not in flight, no token
            return self.replies.endpoint(service, member, strategy, panic, "")
        token = f"{self._prefix}{next(self._picks)}"  # faster than += on an attribute
        member.picked(token, now)
        self._open_at.append(now)
        self._open_tokens.append(token)
        self._open_members.append(member)
        return self.replies.endpoint(service, member, strategy, panic, token)

    def _on_report(self, service: str, report: CallReport) -> None:
        pool = self.pools.get(service)
        member = pool.members.get(report.instance_id) if pool else None
        if pool is not None and member is not None:  # else it left meanwhile
            self._learn(service, pool, member, report, self.clock(), self.wallclock())

    def _on_reports(self, service: str, batch: CallReports) -> None:
        pool = self.pools.get(service)
        members = pool.members if pool is not None else {}
        now, wall = self.clock(), self.wallclock()
        for report in batch.reports:
            member = members.get(report.instance_id)
            if pool is not None and member is not None:
                self._learn(service, pool, member, report, now, wall)
            else:  # the instance left meanwhile, or the id was never valid: say which
                self._unknown(service, report.instance_id)

    def _unknown(self, service: str, instance_id: str) -> None:
        """A batched report naming no member: nothing to learn, unless the id breaks the
        name rule (batches check it here, once per such id, not while decoding)."""
        try:
            subjects.check_name(instance_id, "instance_id")
        except subjects.InvalidNameError as exc:
            self.bus.errors[(subjects.every(subjects.REPORTS), 400)] += 1
            self.log.warning("report.dropped", service=service, reason=str(exc))

    def _learn(
        self,
        service: str,
        pool: Pool,
        member: Member,
        report: CallReport | BatchedReport,
        now: float,
        wall: float,
    ) -> None:
        """What one call report teaches: latency, the end of its pick, outliers (dated by
        the wall clock ejections are stored in)."""
        latency = report.latency_ms
        if not report.ok:
            latency = max(latency, self.settings.failure_penalty_ms)
        member.observe(latency, now)
        pick = report.pick
        if not pick or pick.startswith(self._prefix):  # another replica's pick is its own
            member.closed(pick, finished=report.ok)
        started = wall - report.latency_ms / 1000
        reason = outliers.counted(member, ok=report.ok, started=started, config=pool.outlier)
        if reason is not None:
            self.ejector.failing(service, member.id, reason)

    def _on_ejections(self, service: str, _: Empty) -> Ejections:
        return self.ejector.listing(service)

    def _on_heartbeat(self, service: str, hb: Heartbeat) -> None:
        if hb.inflight is None:
            return
        pool = self.pools.get(service)
        member = pool.members.get(hb.instance_id) if pool else None
        if member is not None:
            member.heartbeat(hb.inflight, self.clock())

    async def _picks_loop(self) -> None:
        """Publish what was picked per interval: cheap for the collector, none per resolve."""
        interval = self.settings.picks_s
        while True:
            await asyncio.sleep(interval)
            counts = self.replies.take()
            by_service: dict[str, list[PickCount]] = {}
            for (service, member, strategy), count in counts.items():
                by_service.setdefault(service, []).append(
                    PickCount(
                        instance_id=member.id,
                        strategy=strategy,
                        count=count,
                        weight=member.weight,  # as the interval closes, as PickCount says
                    )
                )
            for service, picks in by_service.items():
                msg = PickCounts(service=service, node=self.node, interval_s=interval, picks=picks)
                await self.bus.publish(subjects.picks(service), msg)

    async def _reap_loop(self) -> None:
        """Close picks whose report never came, so they stop counting as in flight.

        Often and in slices: at thousands of resolves a second, a second's worth of
        expired picks closed in one go would stall the resolves behind it. A member that
        left meanwhile is closed too, to no effect: nothing counts its load any more.
        """
        timeout = self.settings.pick_timeout_s
        at, tokens, members = self._open_at, self._open_tokens, self._open_members
        while True:
            await asyncio.sleep(min(REAP_S, timeout / 4))
            limit = self.clock() - timeout
            reaped = 0
            while at and at[0] <= limit:
                at.popleft()
                reaped += members.popleft().closed(tokens.popleft(), finished=False)
                if not len(at) % REAP_SLICE:
                    await asyncio.sleep(0)  # let the resolves waiting meanwhile through
            if reaped:
                self.log.debug("picks.timed_out", count=reaped)
