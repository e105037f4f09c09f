"""The balancer's view of one instance, and the load index that keeps picks cheap.

In-flight estimate. An instance's heartbeat says how many requests it serves (`inflight`,
as of that heartbeat); since then this balancer has handed it out for more calls, and
some of the calls it counted have ended. So:

    load = inflight at the last heartbeat - this balancer's calls it counted that have
           since been reported done + picks since that heartbeat not yet reported

A pick stays open until the client's call report names it (or `pick_timeout_s` passes).
A heartbeat resets the count of recent picks: the calls they started are in its figure.
Each pick remembers which heartbeat it followed (a count, not a time: a coarse clock can
give a heartbeat and the picks after it the same reading).

Latency. Peak EWMA (Finagle, Linkerd): a slower sample than the cost raises it at once,
a faster one pulls it down with weight 1 - exp(-gap / tau); read, the cost decays toward
zero over tau, so an instance that was slow is tried again after a while.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Protocol

from services.view.eligibility import may_take_traffic

if TYPE_CHECKING:
    from schemas.registry import Instance

__all__ = ["TAU_S", "LoadIndex", "Member", "Watcher"]

TAU_S = 10.0  # peak EWMA decay time, as Finagle and Linkerd
NEW_PENALTY_MS = 1000.0  # cost of an instance with calls open but no sample yet (tower)
DEFAULT_CAPACITY = 100  # max_inflight when an instance's metadata does not say


class Watcher(Protocol):
    def moved(self, member: Member, old: int, new: int) -> None: ...


class Member:
    __slots__ = (
        "beats",
        "born",
        "calls",
        "capacity",
        "cost",
        "cost_at",
        "drained",
        "eff_weight",
        "ejected",
        "failures",
        "hb_at",
        "hb_inflight",
        "healthy",
        "host",
        "id",
        "judged_from",
        "metadata",
        "oks",
        "open",
        "port",
        "probation",
        "recent",
        "sampled",
        "version",
        "watchers",
        "weight",
        "zone",
    )

    def __init__(self, instance: Instance) -> None:
        self.id = instance.instance_id
        self.open: dict[str, int] = {}  # pick token -> heartbeats seen when it was picked
        self.recent = 0  # open picks made after the last heartbeat
        self.beats = 0  # heartbeats seen
        self.hb_inflight = instance.inflight
        self.hb_at = 0.0
        self.cost = 0.0
        self.cost_at = 0.0
        self.sampled = False
        self.watchers: list[Watcher] = []
        # outlier ejection (outliers.py): failed calls in a row, calls in this interval,
        # probation since a return, and the start of the calls judged (since the last change)
        self.ejected = False
        self.failures = 0
        self.calls = 0
        self.oks = 0
        self.probation = False
        self.judged_from = -math.inf
        self.update(instance)

    def update(self, instance: Instance) -> None:
        self.host = instance.host
        self.port = instance.port
        self.zone = instance.zone
        self.version = instance.version
        self.metadata = instance.metadata
        self.weight = instance.weight
        self.eff_weight = instance.weight  # the weight after slow start (pool.py)
        self.born = instance.registered_at.timestamp()
        self.healthy = instance.healthy
        self.drained = instance.drained
        self.capacity = _capacity(instance.metadata)

    @property
    def load(self) -> int:
        return self.hb_inflight + self.recent

    @property
    def eligible(self) -> bool:
        return may_take_traffic(
            healthy=self.healthy, drained=self.drained, weight=self.weight, ejected=self.ejected
        )

    def has_room(self) -> bool:
        return self.load < self.capacity

    # -- load ----------------------------------------------------------------------------
    # `now` is kept for callers; the heartbeat count, not the clock, dates a pick.
    def picked(self, token: str, now: float) -> None:  # noqa: ARG002
        old = self.hb_inflight + self.recent  # `load`, inline: this runs on every resolve
        self.open[token] = self.beats
        self.recent += 1
        for watcher in self.watchers:
            watcher.moved(self, old, old + 1)

    def closed(self, token: str, *, finished: bool = True) -> bool:
        """Close an open pick (by its token, or the oldest if the token is empty).

        `finished`: the instance is done with the call (a report of success). A call that
        failed or timed out may still be running there, so it stays in the heartbeat's
        figure until the next heartbeat says otherwise.
        """
        if token:
            beat = self.open.pop(token, None)
        elif self.open:
            token = next(iter(self.open))
            beat = self.open.pop(token)
        else:
            beat = None
        if beat is None:
            return False
        old = self.load
        if beat == self.beats:  # picked after the last heartbeat: one of `recent`
            self.recent = max(0, self.recent - 1)
        elif finished and self.hb_inflight > 0:
            # Picked before the last heartbeat, so counted in its figure; it has ended,
            # so the instance serves one fewer than it said. Without this the load runs
            # at about twice the truth between heartbeats.
            self.hb_inflight -= 1
        self._moved(old)
        return True

    def heartbeat(self, inflight: int, now: float) -> None:
        old = self.load
        self.hb_inflight = inflight
        self.hb_at = now
        self.beats += 1
        self.recent = 0
        self._moved(old)

    def _moved(self, old: int) -> None:
        new = self.load
        if new != old:
            for watcher in self.watchers:
                watcher.moved(self, old, new)

    # -- latency -------------------------------------------------------------------------
    def observe(self, rtt_ms: float, now: float) -> None:
        if not self.sampled:
            self.cost, self.sampled = rtt_ms, True
        elif rtt_ms > self.cost:
            self.cost = rtt_ms
        else:
            w = math.exp(-(now - self.cost_at) / TAU_S)
            self.cost = self.cost * w + rtt_ms * (1 - w)
        self.cost_at = now

    def score(self, now: float) -> float:
        """least_response_time's figure: decayed peak EWMA x (in flight + 1)."""
        load = self.load
        if not self.sampled:
            return NEW_PENALTY_MS * load  # unknown: free while idle, costly once busy
        cost = self.cost * math.exp(-(now - self.cost_at) / TAU_S)
        return cost * (load + 1)


def _capacity(metadata: dict[str, str]) -> int:
    raw = metadata.get("max_inflight", "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_CAPACITY
    return value if value > 0 else DEFAULT_CAPACITY


class LoadIndex:
    """Members bucketed by load: the least or most loaded in O(1) amortised.

    A bucket is an insertion-ordered dict, so among equals the one that waited longest
    comes first and ties rotate. `admit` keeps only some members (most_connections keeps
    those with room below their capacity).
    """

    def __init__(self, members: list[Member], *, room_only: bool = False) -> None:
        self.room_only = room_only
        self.buckets: dict[int, dict[Member, None]] = {}
        self.members = members
        self.low = 0
        self.high = 0
        for m in members:
            if self._admits(m, m.load):
                self._add(m, m.load)
            m.watchers.append(self)

    def close(self) -> None:
        for m in self.members:
            with contextlib.suppress(ValueError):
                m.watchers.remove(self)

    def _admits(self, m: Member, load: int) -> bool:
        return not self.room_only or load < m.capacity

    def _add(self, m: Member, load: int) -> None:
        if not self.buckets:
            self.low = self.high = load
        else:
            self.low = min(self.low, load)  # low and high are bounds on the non-empty buckets
            self.high = max(self.high, load)
        self.buckets.setdefault(load, {})[m] = None

    def _discard(self, m: Member, load: int) -> None:
        bucket = self.buckets.get(load)
        if bucket is not None and m in bucket:
            del bucket[m]
            if not bucket:
                del self.buckets[load]

    def moved(self, member: Member, old: int, new: int) -> None:
        if self._admits(member, old):
            self._discard(member, old)
        if self._admits(member, new):
            self._add(member, new)

    def lowest(self, exclude: frozenset[str]) -> Member | None:
        return self._scan(range(self.low, self.high + 1), exclude, lowest=True)

    def highest(self, exclude: frozenset[str]) -> Member | None:
        return self._scan(range(self.high, self.low - 1, -1), exclude, lowest=False)

    def _scan(self, loads: range, exclude: frozenset[str], *, lowest: bool) -> Member | None:
        first = True
        for load in loads:
            bucket = self.buckets.get(load)
            if not bucket:
                continue
            if first:  # tighten the bound to the first non-empty bucket
                first = False
                if lowest:
                    self.low = load
                else:
                    self.high = load
            for m in bucket:
                if m.id not in exclude:
                    return m
        return None
