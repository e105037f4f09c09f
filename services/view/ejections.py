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

import asyncio
import math
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from schemas.balancer import OutlierState
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.msg import Msg
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

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


class OutlierWatch(Lifecycle):
    """Calls `on_state(service, state, stream sequence)` for the latest ejection state of
    every service, then for every new one.

    `synced` is set once the states present at start have all been delivered (at once
    when the stream is empty or missing: then nothing is ejected). `prepare` runs before
    each attempt to subscribe (the balancer creates the stream there); a reader without
    it (the gateway) waits for the balancer to create the stream, looking again every
    `retry_s`. While JetStream does not answer it retries by services/retry.py (from
    `retry_s` up to 10 s). One bad entry is logged and skipped; the watch goes on.
    """

    def __init__(
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        on_state: Callable[[str, OutlierState, int], None],
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        timeout_s: float = 2.0,
        retry_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.log = log
        self.on_state = on_state
        self.prepare = prepare
        self.retry_s = retry_s
        self.js = bus.nc.jetstream(timeout=timeout_s)
        self.synced = asyncio.Event()
        self.following = False  # subscribed to the stream
        self.applied = 0
        self.bad = 0  # entries that could not be read (logged)

    async def start(self) -> None:
        self.spawn(self._follow(), "outliers.watch")

    async def _follow(self) -> None:
        missing = False
        retry = Backoff(base_s=self.retry_s, cap_s=max(self.retry_s, _RETRY_CAP_S)).retry()
        while True:
            try:
                if self.prepare is not None:
                    await self.prepare()
                info = await self.js.stream_info(subjects.OUTLIER_STREAM)
                sub = await self.js.subscribe(
                    subjects.every(subjects.OUTLIER_LOG),
                    cb=self._on_msg,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    stream=subjects.OUTLIER_STREAM,
                )
            except nats.js.errors.NotFoundError:
                if not missing:  # no balancer has run yet: nobody is ejected
                    missing = True
                    self.log.info("outlier.stream_missing", stream=subjects.OUTLIER_STREAM)
                self.synced.set()
                await asyncio.sleep(self.retry_s)
                continue
            except (nats.errors.Error, OSError) as exc:
                self.log.warning("outlier.watch_failed", error=repr(exc), attempt=retry.attempts)
                await retry.wait()
                continue
            self.own(sub, drain=False)  # a JetStream consumer: only unsubscribed (see Bus.drain)
            self.following = True
            if not info.state.messages:
                self.synced.set()
            return

    async def _on_msg(self, msg: Msg) -> None:
        try:
            service, state = state_of(msg.subject, msg.data, msg.headers)
            self.on_state(service, state, msg.metadata.sequence.stream)
            self.applied += 1
        except Exception:  # one bad entry must not stop the watch
            self.bad += 1
            self.log.exception("outlier.state_failed", subject=msg.subject)
        if msg.metadata.num_pending == 0:
            self.synced.set()
