"""Outlier ejection (Envoy's outlier detection) as pure functions over a service's state.

Two rules find an outlier among the calls the fleet reports, and a third judges one that
has just returned:

- Consecutive failures: `consecutive_failures` failed calls in a row (in report order;
  a success between resets the count); checked on each report, ejected at once.
- Probation (Finagle's failure accrual: a revived host is probed, and one failure marks
  it dead again): an instance that returns from an ejection is on probation until one of
  its calls succeeds; with `probation`, a failure reported before that ejects it again at
  once, for the next ejection in a row (so a longer one). Without it, a returned instance
  that still fails half its calls costs another run of failures before five come in a
  row. Calls started before its return (or its ejection) are not judged.
- Success rate: at each sweep (every `interval_s`, on wall-clock boundaries, so every
  replica sweeps at the same moment), among the instances with at least
  `MIN_REQUESTS` calls in the interval, if there are at least `MIN_HOSTS` of them:

      threshold = mean(rate) - STDEV_FACTOR x stdev(rate)     (population stdev)

  and an instance whose rate is below the threshold is ejected.

An ejection lasts  min(base_ejection_s x n, max_ejection_s), where n counts the
ejections in a row: the previous n + 1, less one for each whole interval the instance
has served since it last returned (Envoy's multiplier, decremented per healthy interval).

At most `max_ejected_percent` of the instances are ejected at once, but always one:

    max_ejected = max(1, ceil(instances x percent / 100))

which is Envoy's check (eject while none is, or while ejected / instances < percent).
An outlier the cap keeps serving is `held`: picks of the service say `panic` meanwhile.

The state (`OutlierState`) is what the balancer replicas store with compare-and-set and
all apply, so the functions here take it and return the next one; the clock is passed in
(Unix seconds: replicas compare times, so it is the wall clock).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from schemas.balancer import Ejection, OutlierState, Returned

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from schemas.governor import OutlierConfig
    from services.balancer.members import Member

__all__ = [
    "MIN_HOSTS",
    "MIN_REQUESTS",
    "STDEV_FACTOR",
    "Outcome",
    "active",
    "consecutive_reason",
    "counted",
    "due",
    "eject",
    "ejection_s",
    "held",
    "max_ejected",
    "next_sweep",
    "probation_reason",
    "release",
    "restart",
    "success_rate_outliers",
    "times_after",
]

MIN_HOSTS = 5  # success_rate_minimum_hosts
MIN_REQUESTS = 100  # success_rate_request_volume, per instance and interval
STDEV_FACTOR = 1.9  # success_rate_stdev_factor (1900 / 1000)

_EMPTY = OutlierState()


class Outcome(NamedTuple):
    """What an ejection attempt did: `state` is None when there is nothing to store."""

    kind: str  # "ejected", "already" (ejected now), "capped" (the cap keeps it serving)
    state: OutlierState | None
    ejection: Ejection | None = None


def max_ejected(instances: int, percent: float) -> int:
    """How many of `instances` may be ejected at once: the percentage, but at least one."""
    # round first: 10 % of 10 is 1.0 exactly, never 1.0000000000000002 and so 2
    return max(1, math.ceil(round(instances * percent / 100, 9)))


def ejection_s(times: int, config: OutlierConfig) -> float:
    """How long the `times`-th ejection in a row lasts."""
    return min(config.base_ejection_s * times, config.max_ejection_s)


def times_after(last: Returned | None, now: float, interval_s: float) -> int:
    """The multiplier of a new ejection: one more than what is left of the last one's."""
    if last is None:
        return 1
    healthy = math.floor(max(0.0, now - last.at) / interval_s)
    return max(0, last.times - healthy) + 1


def next_sweep(now: float, interval_s: float) -> float:
    """The next wall-clock boundary of the interval (the same instant on every replica)."""
    return (math.floor(now / interval_s) + 1) * interval_s


def counted(member: Member, *, ok: bool, started: float, config: OutlierConfig) -> str | None:
    """Count one reported call, which started at `started` (wall clock: report time -
    latency), for the rules; the reason when it makes `member` an outlier, else None.

    An ejected member's calls (those still in flight) count not, nor do those started
    before its last ejection or return, nor any while ejection is off: switched on, it
    judges only what follows (and no instance is on probation then)."""
    if not config.enabled:
        member.probation = False
        return None
    if member.ejected or started < member.judged_from:
        return None
    member.calls += 1
    if ok:
        member.oks += 1
        member.failures = 0  # a success between failures resets the count
        member.probation = False  # served a call since its return: judged as any other
        return None
    member.failures += 1
    if member.probation and config.probation:
        return probation_reason()
    if member.failures >= config.consecutive_failures:
        return consecutive_reason(member.failures)
    return None


def restart(member: Member, now: float, *, returned: bool) -> None:
    """A fresh start of `member`'s counts when it is ejected or returns at `now` (Envoy
    resets on both): calls started before `now` are not judged, and one that `returned`
    is on probation until a call of it succeeds."""
    member.failures = member.calls = member.oks = 0
    member.judged_from = now
    member.probation = returned


def consecutive_reason(failures: int) -> str:
    return f"consecutive_failures: {failures} failed calls in a row"


def probation_reason() -> str:
    return "probation: a call failed before any succeeded since it returned"


def success_rate_outliers(
    calls: Mapping[str, tuple[int, int]],
    *,
    min_hosts: int = MIN_HOSTS,
    min_requests: int = MIN_REQUESTS,
    factor: float = STDEV_FACTOR,
) -> list[tuple[str, str]]:
    """Instances whose success rate in the interval is below mean - factor x stdev.

    `calls`: instance id -> (successful calls, all calls) in the interval. Returns
    (instance id, reason) in instance-id order; nothing unless `min_hosts` instances had
    `min_requests` calls each.
    """
    rates = {iid: ok / total for iid, (ok, total) in calls.items() if total >= max(1, min_requests)}
    if len(rates) < min_hosts or len(rates) < 2:  # a stdev needs two
        return []
    mean = statistics.fmean(rates.values())
    stdev = statistics.pstdev(rates.values(), mean)
    threshold = mean - factor * stdev
    return [
        (
            iid,
            (
                f"success_rate: {rate:.1%} of {calls[iid][1]} calls, below {threshold:.1%} "
                f"(mean {mean:.1%} - {factor:g} x stdev {stdev:.1%})"
            ),
        )
        for iid, rate in sorted(rates.items())
        if rate < threshold
    ]


def active(state: OutlierState, now: float) -> frozenset[str]:
    """Who is ejected at `now`: an ejection ends at its `until` on every replica alike."""
    return frozenset(iid for iid, e in state.ejected.items() if e.until > now)


def held(state: OutlierState, now: float, interval_s: float) -> bool:
    """Did the cap keep an outlier serving within the last interval?"""
    return any(now - at < interval_s for at in state.held.values())


def due(state: OutlierState, now: float) -> list[str]:
    """Ejections whose time is over, to be stored as returned."""
    return sorted(iid for iid, e in state.ejected.items() if e.until <= now)


def eject(  # the state, who and why, and what bounds it
    state: OutlierState | None,
    instance_id: str,
    *,
    reason: str,
    now: float,
    config: OutlierConfig,
    instances: int,
) -> Outcome:
    """Eject `instance_id` unless it is ejected already or the cap is reached."""
    state = state or _EMPTY
    current = state.ejected.get(instance_id)
    if current is not None and current.until > now:
        return Outcome("already", None)
    ejected = len(active(state, now))
    if ejected >= max_ejected(instances, config.max_ejected_percent):
        at = state.held.get(instance_id)
        if at is not None and now - at < config.interval_s:
            return Outcome("capped", None)  # recorded in this interval already
        return Outcome(
            "capped",
            msgspec.structs.replace(
                state, held=_fresh(state.held, now, config.interval_s) | {instance_id: now}
            ),
        )
    times = times_after(state.returned.get(instance_id), now, config.interval_s)
    ejection = Ejection(
        since=now, until=now + ejection_s(times, config), reason=reason, times=times
    )
    returned = {k: v for k, v in state.returned.items() if k != instance_id}
    fresh = _fresh(state.held, now, config.interval_s)
    fresh.pop(instance_id, None)
    return Outcome(
        "ejected",
        OutlierState(
            ejected=state.ejected | {instance_id: ejection}, returned=returned, held=fresh
        ),
        ejection,
    )


def release(
    state: OutlierState, instance_ids: Iterable[str], *, now: float, interval_s: float
) -> OutlierState:
    """The state once `instance_ids` have returned; returns long since decayed are dropped."""
    gone = set(instance_ids)
    returned = {
        iid: r
        for iid, r in state.returned.items()
        if times_after(r, now, interval_s) > 1 and iid not in gone
    }
    for iid in gone:
        e = state.ejected.get(iid)
        if e is not None:
            returned[iid] = Returned(at=min(now, e.until), times=e.times)
    return OutlierState(
        ejected={iid: e for iid, e in state.ejected.items() if iid not in gone},
        returned=returned,
        held=_fresh(state.held, now, interval_s),
    )


def _fresh(marks: Mapping[str, float], now: float, interval_s: float) -> dict[str, float]:
    return {iid: at for iid, at in marks.items() if now - at < interval_s}
