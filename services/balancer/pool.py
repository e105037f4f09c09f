"""One service as the balancer sees it: members, candidate sets, pickers, panic.

Pure logic: the worker feeds it registry events, heartbeats and call reports, and asks it
to pick. Candidate sets (by zone, and with unhealthy instances in panic) and their pickers
are built on first use and dropped whenever membership, health, drain or weight changes.
"""

from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING, NamedTuple

from schemas.balancer import DEFAULT_STRATEGY, STRATEGIES, STRATEGY_TRAITS
from schemas.governor import OutlierConfig
from services.balancer import outliers
from services.balancer.members import Member
from services.balancer.ring import HashRing
from services.balancer.strategies import Picker, make_picker
from services.errors import BadRequest, Unavailable
from services.view.eligibility import may_take_traffic
from services.view.rules import in_panic, warm_weight

if TYPE_CHECKING:
    from collections.abc import Callable

    from schemas.governor import ServiceConfig
    from schemas.registry import Instance

__all__ = ["RING_REBUILD_S", "Pick", "Pool"]

# Strategies that pick from the service's hash ring (STRATEGY_TRAITS: keyed): the ring may
# need rebuilding before a pick, so their pickers are never asked without a look at it.
_RING = frozenset(name for name, traits in STRATEGY_TRAITS.items() if traits.keyed)
RING_REBUILD_S = 0.1  # a stale ring is rebuilt at most this often; lookups skip departed ids


class Pick(NamedTuple):
    member: Member
    strategy: str
    panic: bool


# A NamedTuple's own constructor is a Python function: a third of a pick's overhead.
_new_pick = tuple.__new__


def _check(strategy: str, key: str | None) -> None:
    traits = STRATEGY_TRAITS.get(strategy)
    if traits is None:
        raise BadRequest(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if traits.keyed and not key:
        raise BadRequest(f"strategy {strategy} needs a `key` in the resolve request")


class Pool:
    def __init__(
        self,
        service: str,
        *,
        strategy: str = DEFAULT_STRATEGY,
        rng: random.Random | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.strategy = strategy
        self.protect_threshold = 0.0
        self.warmup_s = 0.0
        self.outlier = OutlierConfig()
        self.ejected: frozenset[str] = frozenset()  # outliers.active(): no picks, as drained
        self.held = False  # the cap keeps an outlier serving: picks say `panic`
        self.wallclock = wallclock
        self._rewarm_at = math.inf  # when a warming instance's weight next steps up
        self.members: dict[str, Member] = {}
        self.rng = rng or random.Random()  # noqa: S311  # placement, not cryptography
        self.ring = HashRing()
        self._sets: dict[tuple[str, bool], list[Member]] = {}
        self._pickers: dict[tuple[str, str, bool], Picker] = {}
        # the picker of the service's own strategy, no zone, no panic, nobody warming up:
        # most resolves, answered without building a lookup key (dropped on any change).
        # A request naming no strategy and no zone may ask it directly: what it picks is
        # `Pick(m, self.strategy, self.held)`; None means ask `pick`.
        self.fast: Picker | None = None
        self._healthy: int | None = None

    # -- membership ----------------------------------------------------------------------
    def upsert(self, instance: Instance) -> Member:
        m = self.members.get(instance.instance_id)
        if m is None:
            m = self.members[instance.instance_id] = Member(instance)
            m.ejected = m.id in self.ejected
            self.ring.stale = True
            self._changed()
            return m
        # capacity (metadata max_inflight) too: most_connections' index admits by it
        before = (m.healthy, m.drained, m.weight, m.zone, m.capacity)
        m.update(instance)
        if (m.healthy, m.drained, m.weight, m.zone, m.capacity) != before:
            self.ring.stale = self.ring.stale or m.weight != before[2]
            self._changed()
        return m

    def remove(self, instance_id: str) -> Member | None:
        m = self.members.pop(instance_id, None)
        if m is not None:
            self.ring.stale = True
            self._changed()
        return m

    def configure(self, config: ServiceConfig) -> None:
        """Take the operator's settings for this service (overrides come from the registry)."""
        self.outlier = config.outlier
        new = (config.strategy, config.protect_threshold, config.warmup_s)
        if new != (self.strategy, self.protect_threshold, self.warmup_s):
            self.strategy, self.protect_threshold, self.warmup_s = new
            self._changed()

    def set_ejected(self, ejected: frozenset[str], *, held: bool) -> bool:
        """Take who is ejected (as every replica stores it); True if that changed."""
        self.held = held
        if ejected == self.ejected:
            return False
        self.ejected = ejected
        now = self.wallclock()
        for m in self.members.values():
            was, m.ejected = m.ejected, m.id in ejected
            if was != m.ejected:  # a fresh start either way; a return starts probation
                outliers.restart(m, now, returned=was)
        self._changed()
        return True

    def _warm(self, members: list[Member]) -> None:
        """Slow start (services/view/rules.py): weight ramps up over warmup_s, >= 1."""
        now = self.wallclock()
        for m in members:
            m.eff_weight, next_age = warm_weight(m.weight, now - m.born, self.warmup_s)
            self._rewarm_at = min(self._rewarm_at, m.born + next_age)

    def _changed(self) -> None:
        for picker in self._pickers.values():
            picker.close()
        self._pickers.clear()
        self.fast = None
        self._sets.clear()
        self._healthy = None
        self._rewarm_at = math.inf

    # -- picking -------------------------------------------------------------------------
    @property
    def in_panic(self) -> bool:
        """The healthy share is at or below the protection threshold (0 = never)."""
        if self.protect_threshold <= 0 or not self.members:
            return False
        if self._healthy is None:
            self._healthy = sum(m.healthy for m in self.members.values())
        return in_panic(self._healthy, len(self.members), self.protect_threshold)

    def candidates(self, zone: str, *, panic: bool) -> list[Member]:
        """Who may take traffic, in instance-id order; `zone` narrows it when it can."""
        key = (zone, panic)
        found = self._sets.get(key)
        if found is None:
            ok = [
                m
                for m in self.members.values()
                if may_take_traffic(
                    healthy=m.healthy,
                    drained=m.drained,
                    weight=m.weight,
                    ejected=m.ejected,
                    panic=panic,
                )
            ]
            ok.sort(key=lambda m: m.id)
            self._warm(ok)
            in_zone = [m for m in ok if m.zone == zone] if zone else []
            if not any(m.healthy for m in in_zone):
                in_zone = []  # preferred only while healthy: in panic it may not be
            found = self._sets[key] = in_zone or ok
        return found

    def pick(
        self,
        strategy: str | None,
        key: str | None,
        zone: str | None,
        exclude: frozenset[str],
        now: float,
    ) -> Pick:
        """Who takes the next call. Positional too: keywords cost the resolve path a tenth."""
        fast = self.fast
        if fast is not None and strategy is None and not zone:
            m = fast.pick(key, exclude, now)
            if m is not None:
                return _new_pick(Pick, (m, self.strategy, self.held))
        name = strategy or self.strategy
        rewarm = self._rewarm_at  # inf unless an instance is warming up: no clock read
        if rewarm != math.inf and rewarm <= self.wallclock():  # it gained weight
            self._changed()
        panic = self.in_panic
        flag = panic or self.held  # `panic` also says: the cap keeps an outlier serving
        # The common case in one lookup: a picker already built for this strategy and
        # zone (so the name was checked then), and no ring that may need rebuilding.
        picker = self._pickers.get((name, zone or "", panic))
        if picker is not None and name not in _RING:
            m = picker.pick(key, exclude, now)
            if m is not None:
                return _new_pick(Pick, (m, name, flag))
        _check(name, key)
        m = self._pick_in(name, zone or "", key, exclude, panic, now)
        if m is None and zone:
            # The zone is a preference: a retry that excluded all of it goes elsewhere.
            narrowed = self.candidates(zone, panic=panic)
            if len(narrowed) < len(self.candidates("", panic=panic)):
                m = self._pick_in(name, "", key, exclude, panic, now)
        if m is None:
            raise Unavailable(self._why_none(name, exclude))
        return Pick(m, name, flag)

    def _pick_in(
        self,
        name: str,
        zone: str,
        key: str | None,
        exclude: frozenset[str],
        panic: bool,
        now: float,
    ) -> Member | None:
        cands = self.candidates(zone, panic=panic)
        if not cands:
            return None
        if (
            name in _RING
            and self.ring.stale
            and (now - self.ring.built_at >= RING_REBUILD_S or not self.ring.owners)
        ):
            self.ring.build(((m.id, m.weight) for m in self.members.values()), now)
        pkey = (name, zone, panic)
        picker = self._pickers.get(pkey)
        if picker is None:
            picker = self._pickers[pkey] = make_picker(name, cands, self.rng, self.ring)
            if (
                name == self.strategy
                and name not in _RING
                and not zone
                and not panic
                and self._rewarm_at == math.inf
            ):
                self.fast = picker
        return picker.pick(key, exclude, now)

    def _why_none(self, strategy: str, exclude: frozenset[str]) -> str:
        ms = self.members.values()
        unhealthy = sum(not m.healthy for m in ms)
        drained = sum(m.drained for m in ms)
        zero = sum(m.weight == 0 for m in ms)
        excluded = sum(m.id in exclude for m in ms)
        ejected = sum(m.ejected for m in ms)
        why = (
            f"no instance of {self.service!r} can take the request: {len(self.members)} "
            f"registered, {unhealthy} unhealthy, {drained} drained, {zero} with weight 0, "
            f"{excluded} excluded, {ejected} ejected as outliers"
        )
        if ejected:
            why += (
                " (failing calls; at most "
                f"{self.outlier.max_ejected_percent:g} % of instances, and at least one, "
                "are ejected at once: the rest keep serving)"
            )
        if STRATEGY_TRAITS[strategy].capacity:
            why += "; the rest are at their max_inflight capacity"
        return why
