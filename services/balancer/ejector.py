"""Outlier ejection across balancer replicas: decide, store once, apply everywhere.

Every replica sees every call report, so each may find the same outlier. A decision is
stored in JetStream (stream BATON_OUTLIERS, one subject per service holding the service's
`OutlierState`) with compare-and-set on the subject's last sequence: of the replicas that
decide the same ejection, one stores it and publishes the event; the others' writes fail,
they read the state again and find it done. Every replica applies the stored state (an
ordered consumer delivers each service's latest state at start, then every new one:
services/view/ejections.py, the reader the gateway runs too), so they agree on who is
ejected; an ejection ends at its `until` on every replica alike.
The cap (max_ejected_percent) is checked inside the same compare-and-set, so two
replicas ejecting two instances at once cannot pass it together.

Sweeps run on wall-clock boundaries of each service's `interval_s` (the success-rate
rule, and storing returns). The pure rules are in outliers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, TypeAlias

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from schemas.balancer import Ejected, Ejections, OutlierEvent, OutlierState
from schemas.fields import from_timestamp
from schemas.governor import OutlierConfig
from services.balancer import outliers
from services.jetstream import WRONG_LAST_SEQUENCE
from services.lifecycle import Lifecycle
from services.view.ejections import OutlierWatch, decode_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.balancer.pool import Pool
    from services.bus import Bus

    # A transition: (state now, wall clock) -> (the state to store, the events it makes),
    # or None when there is nothing to store.
    Change: TypeAlias = Callable[
        [OutlierState, float], tuple[OutlierState, list[OutlierEvent]] | None
    ]

__all__ = ["Ejector", "ensure_outlier_stream"]

_ATTEMPTS = 10  # compare-and-set rounds before a decision is given up (logged)
_MAX_NAP_S = 1.0  # the sweep loop wakes at least this often (new services, config)
_encode = msgspec.json.Encoder().encode
_EMPTY = OutlierState()
_DEFAULTS = OutlierConfig()


class _Stale(Exception):  # a signal, not an error
    """Another replica stored a state since the one this change was built on."""


async def ensure_outlier_stream(bus: Bus, *, replicas: int) -> None:
    js = bus.nc.jetstream()
    config = api.StreamConfig(
        name=subjects.OUTLIER_STREAM,
        subjects=[subjects.every(subjects.OUTLIER_LOG)],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,  # only the latest state of a service matters
        discard=api.DiscardPolicy.OLD,
        num_replicas=replicas,
        allow_direct=True,
    )
    with contextlib.suppress(nats.js.errors.BadRequestError):  # exists already
        await js.add_stream(config)


class Ejector(Lifecycle):
    """Finds, stores and applies a balancer's ejections; `pools` is the worker's."""

    def __init__(  # noqa: PLR0913  # its dependencies, passed in
        self,
        bus: Bus,
        pools: dict[str, Pool],
        log: FilteringBoundLogger,
        *,
        node: str,
        wallclock: Callable[[], float],
        timeout_s: float = 2.0,
        replicas: int = 1,
        retry_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.pools = pools
        self.log = log
        self.node = node
        self.wallclock = wallclock
        self.timeout_s = timeout_s
        self.replicas = replicas
        self.retry_s = retry_s
        self.js = bus.nc.jetstream(timeout=timeout_s)
        self.states: dict[str, OutlierState] = {}
        self.seqs: dict[str, int] = {}
        self.watch = OutlierWatch(
            bus,
            log,
            self._take,
            prepare=lambda: ensure_outlier_stream(bus, replicas=replicas),
            timeout_s=timeout_s,
            retry_s=retry_s,
        )
        self.synced = self.watch.synced
        self.published: list[OutlierEvent] = []  # by this replica (for tests and stats)
        self.lost = 0  # compare-and-set races lost to another replica
        self._swept: dict[str, int] = {}  # service -> index of the last interval swept
        self._pending: set[tuple[str, str]] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        await self.enter(self.watch)
        self.spawn(self._sweep_loop(), "outliers.sweep")

    async def stop(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            with contextlib.suppress(asyncio.CancelledError):
                await job

    # -- what the worker calls -----------------------------------------------------------
    def failing(self, service: str, instance_id: str, reason: str) -> None:
        """An instance broke the consecutive-failures rule: eject it (in the background)."""
        key = (service, instance_id)
        if key in self._pending:
            return
        self._pending.add(key)
        job = asyncio.create_task(self._eject(service, instance_id, reason))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def listing(self, service: str) -> Ejections:
        pool = self.pools.get(service)
        state = self.states.get(service, _EMPTY)
        now = self.wallclock()
        ejected = [
            Ejected(
                instance_id=iid,
                since=from_timestamp(e.since),
                until=from_timestamp(e.until),
                reason=e.reason,
                ejections=e.times,
            )
            for iid, e in sorted(state.ejected.items())
            if e.until > now
        ]
        size = len(pool.members) if pool else 0
        cfg = pool.outlier if pool else _DEFAULTS
        percent, interval = cfg.max_ejected_percent, cfg.interval_s
        return Ejections(
            service=service,
            ejected=ejected,
            max_ejected=outliers.max_ejected(size, percent),
            held=sorted(iid for iid, at in state.held.items() if now - at < interval),
        )

    def apply(self, service: str) -> None:
        """Bring the pool to the stored state, as of now (the worker calls it for new pools)."""
        pool = self.pools.get(service)
        if pool is None:
            return
        state = self.states.get(service, _EMPTY)
        now = self.wallclock()
        cfg = pool.outlier
        if cfg.enabled:
            ejected = outliers.active(state, now)
            held = outliers.held(state, now, cfg.interval_s)
        else:
            ejected, held = frozenset(), False
        if pool.set_ejected(ejected, held=held):
            self._wake.set()  # an `until` to wake for

    # -- deciding ------------------------------------------------------------------------
    async def _eject(self, service: str, instance_id: str, reason: str) -> None:
        def change(
            state: OutlierState, now: float
        ) -> tuple[OutlierState, list[OutlierEvent]] | None:
            pool = self.pools.get(service)
            if pool is None or instance_id not in pool.members or not pool.outlier.enabled:
                return None
            out = outliers.eject(
                state,
                instance_id,
                reason=reason,
                now=now,
                config=pool.outlier,
                instances=len(pool.members),
            )
            if out.state is None:
                return None
            if out.ejection is None:  # capped: recorded, no event (the listing says it)
                self.log.warning(
                    "outlier.capped", service=service, instance_id=instance_id, reason=reason
                )
                return out.state, []
            e = out.ejection
            count = len(outliers.active(out.state, now))
            event = self._event(
                "ejected", service, instance_id, e.until, reason, e.times, now, ejected=count
            )
            return out.state, [event]

        try:
            await self._commit(service, change)
        finally:
            self._pending.discard((service, instance_id))

    async def _sweep(self, service: str, pool: Pool) -> None:
        """One interval is over: the success-rate rule over its calls."""
        cfg = pool.outlier
        calls = {m.id: (m.oks, m.calls) for m in pool.members.values() if not m.ejected}
        for m in pool.members.values():
            m.calls = m.oks = 0
        if cfg.enabled and cfg.success_rate:
            for iid, reason in outliers.success_rate_outliers(calls):
                await self._eject(service, iid, reason)

    def _returns(self, service: str) -> Change:
        def change(
            state: OutlierState, now: float
        ) -> tuple[OutlierState, list[OutlierEvent]] | None:
            pool = self.pools.get(service)
            enabled = pool is not None and pool.outlier.enabled
            back = outliers.due(state, now) if enabled else sorted(state.ejected)
            if not back:
                return None
            interval = (pool.outlier if pool else _DEFAULTS).interval_s
            new = outliers.release(state, back, now=now, interval_s=interval)
            why = "ejection time over" if enabled else "outlier ejection disabled"
            events = [
                self._event(
                    "returned",
                    service,
                    iid,
                    state.ejected[iid].until,
                    why,
                    state.ejected[iid].times,
                    now,
                    ejected=len(outliers.active(new, now)),
                )
                for iid in back
            ]
            return new, events

        return change

    def _event(  # noqa: PLR0913  # the event's fields
        self,
        kind: str,
        service: str,
        instance_id: str,
        until: float,
        reason: str,
        times: int,
        now: float,
        *,
        ejected: int,
    ) -> OutlierEvent:
        return OutlierEvent(
            kind=kind,  # type: ignore[arg-type]  # "ejected" or "returned", by the callers
            service=service,
            instance_id=instance_id,
            until=from_timestamp(until),
            reason=reason,
            at=from_timestamp(now),
            ejections=times,
            ejected=ejected,
            node=self.node,
        )

    async def _commit(self, service: str, change: Change) -> None:
        """Store `change` over the latest state with compare-and-set; publish its events."""
        for _ in range(_ATTEMPTS):
            state = self.states.get(service, _EMPTY)
            seq = self.seqs.get(service, 0)
            made = change(state, self.wallclock())
            if made is None:
                return
            new, events = made
            try:
                seq = await self._store(service, new, seq)
            except _Stale:
                self.lost += 1
                await self._reload(service)
                continue
            except (nats.errors.Error, OSError) as exc:
                self.log.warning("outlier.store_failed", service=service, error=repr(exc))
                return
            self._take(service, new, seq)
            for event in events:
                await self.bus.publish(subjects.balancer_events(service), event)
                self.published.append(event)
                self.log.info(
                    "outlier.ejected" if event.kind == "ejected" else "outlier.returned",
                    service=service,
                    instance_id=event.instance_id,
                    until=event.until.isoformat(),
                    reason=event.reason,
                )
            return
        self.log.warning("outlier.contended", service=service)

    async def _store(self, service: str, state: OutlierState, after: int) -> int:
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(after)}
        try:
            ack = await self.js.publish(
                subjects.outlier_log(service), _encode(state), headers=headers
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise _Stale from None
            raise
        return ack.seq

    async def _reload(self, service: str) -> None:
        try:
            raw = await self.js.get_last_msg(subjects.OUTLIER_STREAM, subjects.outlier_log(service))
        except nats.js.errors.NotFoundError:
            return
        if raw.data is not None and raw.seq is not None:
            self._take(service, decode_state(raw.data), raw.seq)

    def _take(self, service: str, state: OutlierState, seq: int) -> None:
        if seq <= self.seqs.get(service, 0):
            return  # older than what this replica has (its own write, seen again)
        self.states[service] = state
        self.seqs[service] = seq
        self.apply(service)

    # -- the clock -----------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while True:
            now = self.wallclock()
            wake = now + _MAX_NAP_S
            for service, pool in list(self.pools.items()):
                interval = pool.outlier.interval_s
                index = math.floor(now / interval)
                if self._swept.setdefault(service, index) < index:
                    self._swept[service] = index
                    try:
                        await self._sweep(service, pool)
                    except Exception:  # a sweep's bug must not stop ejections elsewhere
                        self.log.exception("outlier.sweep_failed", service=service)
                wake = min(wake, outliers.next_sweep(now, interval))
                state = self.states.get(service, _EMPTY)
                if state.ejected:  # an ejection ends on time, on every replica alike
                    self.apply(service)
                    if not pool.outlier.enabled or outliers.due(state, now):
                        await self._commit(service, self._returns(service))
                    ends = [e.until for e in state.ejected.values() if e.until > now]
                    wake = min(wake, *ends) if ends else wake
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # not wait_for: see RegistrySync._loop
                async with asyncio.timeout(max(0.001, wake - self.wallclock())):
                    await self._wake.wait()
