"""Outlier ejection across balancer replicas: decide, store once, apply everywhere.

Every replica sees every call report, so each may find the same outlier. A decision is
stored in JetStream (stream BATON_OUTLIERS) with compare-and-set on the last sequence of
the service's two subjects: a change that makes an event (an ejection, one return) is
stored as the event itself on `baton.outliers.v1.{service}.event`, the service's new
`OutlierState` in a header; one that makes none (the cap holding an outlier) as the state
on `.state`. The stream republishes each stored event to balancer.v1.events.{service}, so
storing it is publishing it: an event is on the wire exactly when it is stored, once,
whoever stored it, and a crash after the store loses nothing. Of the replicas that decide
the same ejection, one stores it; the others' writes fail (and are not republished), they
read the state again and find it done. Every replica applies the stored state as its
read model (services/view/) follows the stream, as the gateway's does (an ordered
consumer delivers each service's latest state at start, then every new one), so they
agree on who is ejected; an ejection ends at its `until` on every replica alike.
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

from schemas import subjects
from schemas.balancer import Ejected, Ejections, OutlierEvent, OutlierState
from schemas.fields import from_timestamp
from schemas.governor import OutlierConfig
from services.balancer import outliers
from services.errors import Unavailable
from services.lifecycle import Lifecycle
from services.stream import LostRace, StreamSpec, Writer, ensure_stream
from services.view.ejections import state_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.balancer.pool import Pool
    from services.bus import Bus
    from services.stream import StreamSpec as Existing
    from services.view import RegistryView

    # A transition: (state now, wall clock) -> (the state to store, the event it makes
    # if any), or None when there is nothing to store.
    Change: TypeAlias = Callable[
        [OutlierState, float], tuple[OutlierState, OutlierEvent | None] | None
    ]

__all__ = ["Ejector", "ensure_outlier_stream"]

_ATTEMPTS = 10  # compare-and-set rounds before a decision is given up (logged)
_MAX_NAP_S = 1.0  # the sweep loop wakes at least this often (new services, config)
_encode = msgspec.json.Encoder().encode
_EMPTY = OutlierState()
_DEFAULTS = OutlierConfig()


def _without_republish(existing: Existing) -> bool:
    return existing.republish is None  # made by a version before the republish


async def ensure_outlier_stream(bus: Bus, *, replicas: int) -> None:
    spec = StreamSpec(
        name=subjects.OUTLIER_STREAM,
        subjects=(subjects.every(subjects.OUTLIER_LOG),),
        per_subject=1,  # only the latest state (and event) of a service matters
        replicas=replicas,
        republish=subjects.outlier_republish(),  # storing an event publishes it
    )
    await ensure_stream(bus, spec, outdated=_without_republish)


class Ejector(Lifecycle):
    """Finds, stores and applies a balancer's ejections; `pools` is the worker's, the
    stored states are the read model's (`view`, which follows the stream)."""

    def __init__(
        self,
        bus: Bus,
        pools: dict[str, Pool],
        view: RegistryView,
        log: FilteringBoundLogger,
        *,
        node: str,
        wallclock: Callable[[], float],
        timeout_s: float = 2.0,
    ) -> None:
        self.bus = bus
        self.pools = pools
        self.view = view
        self.log = log
        self.node = node
        self.wallclock = wallclock
        self.timeout_s = timeout_s
        self.writer = Writer(
            bus, stream=subjects.OUTLIER_STREAM, what="the ejection log", timeout_s=timeout_s
        )
        self.states = view.outlier_states  # service -> the latest stored state
        self.seqs = view.outlier_seqs  # service -> its stream sequence
        self.synced = view.outliers.synced
        self.published: list[OutlierEvent] = []  # by this replica (for tests and stats)
        self.lost = 0  # compare-and-set races lost to another replica
        self._swept: dict[str, int] = {}  # service -> index of the last interval swept
        self._pending: set[tuple[str, str]] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
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
        ) -> tuple[OutlierState, OutlierEvent | None] | None:
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
                return out.state, None
            e = out.ejection
            count = len(outliers.active(out.state, now))
            event = self._event(
                "ejected", service, instance_id, e.until, reason, e.times, now, ejected=count
            )
            return out.state, event

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

    def _return_one(self, service: str) -> Change:
        """The first instance whose ejection is over returns (one event per stored record)."""

        def change(state: OutlierState, now: float) -> tuple[OutlierState, OutlierEvent] | None:
            pool = self.pools.get(service)
            enabled = pool is not None and pool.outlier.enabled
            back = outliers.due(state, now) if enabled else sorted(state.ejected)
            if not back:
                return None
            iid = back[0]
            interval = (pool.outlier if pool else _DEFAULTS).interval_s
            new = outliers.release(state, [iid], now=now, interval_s=interval)
            why = "ejection time over" if enabled else "outlier ejection disabled"
            e = state.ejected[iid]
            ejected = len(outliers.active(new, now))
            event = self._event(
                "returned", service, iid, e.until, why, e.times, now, ejected=ejected
            )
            return new, event

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

    async def _commit(self, service: str, change: Change) -> bool:
        """Store `change` over the latest state with compare-and-set (its event, if any, is
        published by the store); True if something was stored."""
        for _ in range(_ATTEMPTS):
            state = self.states.get(service, _EMPTY)
            seq = self.seqs.get(service, 0)
            made = change(state, self.wallclock())
            if made is None:
                return False
            new, event = made
            try:
                seq = await self._store(service, new, event, seq)
            except LostRace:
                self.lost += 1
                await self._reload(service)
                continue
            except Unavailable as exc:
                self.log.warning("outlier.store_failed", service=service, error=exc.message)
                return False
            self.view.take_outliers(service, new, seq)  # applied here as the model tells it
            if event is not None:
                self.published.append(event)
                self.log.info(
                    "outlier.ejected" if event.kind == "ejected" else "outlier.returned",
                    service=service,
                    instance_id=event.instance_id,
                    until=event.until.isoformat(),
                    reason=event.reason,
                )
            return True
        self.log.warning("outlier.contended", service=service)
        return False

    async def _store(
        self, service: str, state: OutlierState, event: OutlierEvent | None, after: int
    ) -> int:
        headers = {}
        if event is None:
            subject, payload = subjects.outlier_state(service), _encode(state)
        else:  # the event itself; the stream republishes it to balancer.v1.events
            subject, payload = subjects.outlier_event(service), _encode(event)
            headers[subjects.OUTLIER_STATE_HEADER] = _encode(state).decode()
        # the race is over the service's two subjects: a state and an event alike
        scope = subjects.outlier_records(service)
        return await self.writer.append(subject, payload, after=after, scope=scope, headers=headers)

    async def _reload(self, service: str) -> None:
        last = await self.writer.last(subjects.outlier_records(service))
        if last is not None:
            state = state_of(last.subject, last.data, last.headers)[1]
            self.view.take_outliers(service, state, last.seq)

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
                        while await self._commit(service, self._return_one(service)):
                            pass  # one stored record (one event) per return
                    ends = [e.until for e in state.ejected.values() if e.until > now]
                    wake = min(wake, *ends) if ends else wake
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # not wait_for: see RegistrySync._loop
                async with asyncio.timeout(max(0.001, wake - self.wallclock())):
                    await self._wake.wait()
