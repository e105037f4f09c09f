"""The balancers' ejections, as every reader follows them: the stream BATON_OUTLIERS.

The balancer replicas store each service's `OutlierState` in JetStream with
compare-and-set (services/balancer/ejector.py): a change that makes an event as that event
on `baton.outliers.v1.{service}.event` with the state in its `Baton-Outlier-State` header,
one that makes none as the state itself on `.state`; the newer of the two is the
service's state. A reader follows the stream with an ordered consumer that delivers the
latest records of every service first, then each new one as it is stored (a record older
than one already applied is passed over by its stream sequence): the balancer replicas
apply it to their pools, the gateway leaves the ejected instances out of its answers. So a
reader started late knows the ejections in force, and every reader judges from the same
stored records:

    ejected(now) = { id : state.ejected[id].until > now }   while outlier ejection is on
                 = {}                                        while it is off

An ejection whose `until` has passed is over even if its return was never stored (the
balancers were down meanwhile). An outlier the cap (max_ejected_percent) kept serving is
only `held`, never `ejected`, so it keeps being answered, as the balancer picks it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

from schemas import subjects
from schemas.balancer import OutlierState
from services.retry import Backoff
from services.stream import Follower

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.stream import Record

__all__ = ["EMPTY", "OutlierWatch", "ejected", "next_end", "state_of"]

EMPTY = OutlierState()
_RETRY_CAP_S = 10.0  # the longest wait between attempts while JetStream does not answer
_decode = msgspec.json.Decoder(OutlierState).decode


def state_of(
    subject: str, data: bytes | None, headers: dict[str, str] | None
) -> tuple[str, OutlierState]:
    """The service and state a record of the stream holds: a state, or an event with the
    state in its header. Raises InvalidNameError or msgspec's errors for a bad record."""
    service, kind = subjects.outlier_record_of(subject)
    if kind == subjects.OUTLIER_STATE:
        return service, _decode(data or b"")
    raw = (headers or {}).get(subjects.OUTLIER_STATE_HEADER)
    if raw is None:
        raise ValueError(f"{subject}: an event without its {subjects.OUTLIER_STATE_HEADER}")
    return service, _decode(raw)


def ejected(state: OutlierState, now: float, *, enabled: bool = True) -> frozenset[str]:
    """Who is ejected at `now` (Unix seconds), by the stored records; see the module doc."""
    if not enabled:
        return frozenset()
    return frozenset(iid for iid, e in state.ejected.items() if e.until > now)


def next_end(state: OutlierState, now: float) -> float:
    """When the next ejection in force ends (inf if none): a reader wakes then."""
    return min((e.until for e in state.ejected.values() if e.until > now), default=math.inf)


class OutlierWatch(Follower):
    """Calls `on_state(service, state, stream sequence)` for the latest ejection state of
    every service, then for every new one.

    `synced` is set once the states present at start have all been delivered (at once
    when the stream is empty or missing: then nothing is ejected). `prepare` runs before
    each attempt to subscribe (the balancer creates the stream there); a reader without
    it (the gateway) waits for the balancer to create the stream, looking again every
    `retry_s` to twice that (jittered). While JetStream does not answer it retries by
    services/retry.py (from `retry_s` up to 10 s). One bad entry is logged and skipped;
    the watch goes on.
    """

    def __init__(  # its dependencies, passed in
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        on_state: Callable[[str, OutlierState, int], None],
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        timeout_s: float = 2.0,
        retry_s: float = 1.0,
    ) -> None:
        super().__init__(
            bus,
            log,
            self._on_record,
            stream=subjects.OUTLIER_STREAM,
            subject=subjects.every(subjects.OUTLIER_LOG),
            noun="outlier",
            prepare=prepare,
            retry=Backoff(base_s=retry_s, cap_s=max(retry_s, _RETRY_CAP_S)),
            look_again=Backoff(base_s=retry_s, cap_s=2 * retry_s),
            timeout_s=timeout_s,
        )
        self.on_state = on_state

    @property
    def synced(self) -> asyncio.Event:
        return self.caught_up

    def _on_record(self, record: Record) -> None:
        service, state = state_of(record.subject, record.data, record.headers)
        self.on_state(service, state, record.seq)
