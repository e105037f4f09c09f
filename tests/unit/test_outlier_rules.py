"""Outlier ejection's rules (services/balancer/outliers.py) and how a pool applies them."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest
from builders import instance, pick, pool_of

from schemas.balancer import OutlierState, Returned
from schemas.governor import OutlierConfig
from services.balancer import outliers
from services.balancer.pool import Pool
from services.errors import Unavailable

if TYPE_CHECKING:
    from services.balancer.members import Member

CFG = OutlierConfig(interval_s=10, base_ejection_s=30, max_ejection_s=300)


@pytest.mark.parametrize(
    ("instances", "percent", "cap"),
    [(10, 10, 1), (25, 10, 3), (20, 10, 2), (10, 15, 2), (3, 10, 1), (1, 10, 1), (8, 0, 1),
     (4, 100, 4), (0, 10, 1)],
)  # fmt: skip
def test_cap_is_the_percentage_but_at_least_one(instances: int, percent: float, cap: int) -> None:
    assert outliers.max_ejected(instances, percent) == cap


def test_ejection_time_grows_with_ejections_in_a_row_up_to_the_maximum() -> None:
    assert [outliers.ejection_s(n, CFG) for n in (1, 2, 3, 10, 11, 50)] == [
        30, 60, 90, 300, 300, 300
    ]  # fmt: skip


def test_multiplier_falls_by_one_per_healthy_interval() -> None:
    last = Returned(at=1000.0, times=3)
    assert outliers.times_after(None, 1000.0, 10) == 1
    assert outliers.times_after(last, 1000.0, 10) == 4  # at once: one more in a row
    assert outliers.times_after(last, 1009.9, 10) == 4
    assert outliers.times_after(last, 1010.0, 10) == 3  # one healthy interval
    assert outliers.times_after(last, 1025.0, 10) == 2
    assert outliers.times_after(last, 1030.0, 10) == 1  # all forgotten
    assert outliers.times_after(last, 5000.0, 10) == 1


def test_sweeps_fall_on_wall_clock_boundaries() -> None:
    assert outliers.next_sweep(1003.2, 10) == 1010
    assert outliers.next_sweep(1010.0, 10) == 1020
    assert outliers.next_sweep(0.26, 0.25) == 0.5


def test_success_rate_ejects_below_mean_minus_1_9_stdev() -> None:
    calls = {f"i{n}": (100, 100) for n in range(9)} | {"bad": (50, 100)}
    found = outliers.success_rate_outliers(calls)
    assert [iid for iid, _ in found] == ["bad"]
    reason = found[0][1]
    assert reason.startswith("success_rate: 50.0% of 100 calls, below ")
    assert "1.9 x stdev" in reason


def test_success_rate_needs_five_hosts_of_a_hundred_calls() -> None:
    four = {f"i{n}": (100, 100) for n in range(3)} | {"bad": (0, 100)}
    assert outliers.success_rate_outliers(four) == []
    # five instances, but one has too few calls to count: four left
    thin = four | {"new": (99, 99)}
    assert outliers.success_rate_outliers(thin) == []
    five = four | {"i3": (100, 100)}
    assert [iid for iid, _ in outliers.success_rate_outliers(five)] == ["bad"]


def test_success_rate_spares_a_fleet_that_fails_evenly() -> None:
    calls = {f"i{n}": (90, 100) for n in range(6)}  # stdev 0: nobody is below the mean
    assert outliers.success_rate_outliers(calls) == []
    # a spread that stays within 1.9 stdev of the mean
    calls = {f"i{n}": (90 + n, 100) for n in range(6)}
    assert outliers.success_rate_outliers(calls) == []


def test_eject_sets_until_from_the_multiplier() -> None:
    out = outliers.eject(None, "a", reason="r", now=1000.0, config=CFG, instances=10)
    assert out.kind == "ejected"
    assert out.state is not None
    assert out.ejection is not None
    assert (out.ejection.since, out.ejection.until, out.ejection.times) == (1000.0, 1030.0, 1)
    assert outliers.active(out.state, 1029.9) == {"a"}
    assert outliers.active(out.state, 1030.0) == frozenset()  # ends at until, everywhere
    assert outliers.due(out.state, 1030.0) == ["a"]


def test_an_ejected_instance_is_not_ejected_twice() -> None:
    state = outliers.eject(None, "a", reason="r", now=1000.0, config=CFG, instances=10).state
    again = outliers.eject(state, "a", reason="r", now=1001.0, config=CFG, instances=10)
    assert again == outliers.Outcome("already", None)


def test_return_and_eject_again_doubles_then_decays() -> None:
    state = outliers.eject(None, "a", reason="r", now=1000.0, config=CFG, instances=10).state
    assert state is not None
    state = outliers.release(state, ["a"], now=1030.0, interval_s=10)
    assert state.ejected == {}
    assert state.returned == {"a": Returned(at=1030.0, times=1)}
    second = outliers.eject(state, "a", reason="r", now=1031.0, config=CFG, instances=10)
    assert second.ejection is not None
    assert second.ejection.times == 2
    assert second.ejection.until == 1031.0 + 60
    assert second.state is not None
    assert second.state.returned == {}  # the ejection carries the count now
    # served healthy for 2 intervals after a second return: back to one ejection's time
    state = outliers.release(second.state, ["a"], now=1091.0, interval_s=10)
    third = outliers.eject(state, "a", reason="r", now=1111.0, config=CFG, instances=10)
    assert third.ejection is not None
    assert third.ejection.times == 1


def test_release_forgets_returns_that_decayed() -> None:
    state = OutlierState(
        returned={"old": Returned(at=0.0, times=1), "b": Returned(at=990, times=3)}
    )
    state = outliers.release(state, [], now=1000.0, interval_s=10)
    assert set(state.returned) == {"b"}


def test_cap_holds_the_rest_and_records_it_once_an_interval() -> None:
    state = outliers.eject(None, "a", reason="r", now=1000.0, config=CFG, instances=10).state
    capped = outliers.eject(state, "b", reason="r", now=1001.0, config=CFG, instances=10)
    assert capped.kind == "capped"
    assert capped.ejection is None
    assert capped.state is not None
    assert capped.state.held == {"b": 1001.0}
    assert outliers.active(capped.state, 1002.0) == {"a"}
    assert outliers.held(capped.state, 1002.0, 10)
    assert not outliers.held(capped.state, 1011.0, 10)  # an interval later: over
    # recorded already in this interval: nothing to store
    assert outliers.eject(capped.state, "b", reason="r", now=1005.0, config=CFG, instances=10) == (
        outliers.Outcome("capped", None)
    )
    # a larger fleet has room for two
    two = outliers.eject(capped.state, "b", reason="r", now=1005.0, config=CFG, instances=20)
    assert two.kind == "ejected"
    assert two.state is not None
    assert two.state.held == {}


def test_one_instance_can_always_be_ejected() -> None:
    out = outliers.eject(None, "only", reason="r", now=0.0, config=CFG, instances=1)
    assert out.kind == "ejected"


# -- the pool: ejected instances get no picks, like drained ones --------------------------
@pytest.mark.parametrize(
    "strategy",
    ["random", "round_robin", "weighted", "least_connections", "least_response_time",
     "most_connections", "consistent_hash"],
)  # fmt: skip
def test_no_strategy_picks_an_ejected_instance(strategy: str) -> None:
    pool = pool_of(instance("a"), instance("b"), instance("c"), strategy=strategy)
    assert pool.set_ejected(frozenset({"b"}), held=False)
    for n in range(60):
        assert pick(pool, key=f"k{n}").member.id != "b"
    assert pool.set_ejected(frozenset(), held=False)
    assert [m.id for m in pool.candidates("", panic=False)] == ["a", "b", "c"]
    if strategy in ("random", "round_robin", "weighted", "consistent_hash"):
        assert "b" in {pick(pool, key=f"k{n}").member.id for n in range(60)}


def test_every_instance_ejected_is_a_503_that_says_why() -> None:
    pool = pool_of(instance("a"))
    pool.set_ejected(frozenset({"a"}), held=False)
    with pytest.raises(Unavailable) as err:
        pick(pool)
    assert "1 ejected as outliers" in err.value.message
    assert "the rest keep serving" in err.value.message


def test_held_outliers_set_the_panic_flag() -> None:
    pool = pool_of(instance("a"), instance("b"))
    assert pick(pool).panic is False
    pool.set_ejected(frozenset({"a"}), held=True)
    p = pick(pool)
    assert (p.member.id, p.panic) == ("b", True)


def test_a_member_registered_while_ejected_stays_ejected() -> None:
    pool = pool_of(instance("a"))
    pool.set_ejected(frozenset({"b"}), held=False)
    pool.upsert(instance("b"))
    assert pool.members["b"].ejected
    assert {pick(pool).member.id for _ in range(4)} == {"a"}


def test_ejection_and_return_reset_the_counts() -> None:
    pool = pool_of(instance("a"), instance("b"))
    m = pool.members["a"]
    m.failures, m.calls, m.oks = 5, 9, 4
    pool.set_ejected(frozenset({"a"}), held=False)
    assert (m.failures, m.calls, m.oks) == (0, 0, 0)


def test_calls_count_only_while_ejection_is_on_and_the_member_serves() -> None:
    pool = pool_of(instance("a"))
    m = pool.members["a"]
    cfg = OutlierConfig(consecutive_failures=2)
    assert outliers.counted(m, ok=False, started=1.0, config=cfg) is None
    reason = outliers.counted(m, ok=False, started=2.0, config=cfg)  # the second in a row
    assert reason == "consecutive_failures: 2 failed calls in a row"
    assert (m.failures, m.calls, m.oks) == (2, 2, 0)
    assert outliers.counted(m, ok=True, started=3.0, config=cfg) is None
    assert (m.failures, m.calls, m.oks) == (0, 3, 1)  # a success resets the count
    off = OutlierConfig(enabled=False, consecutive_failures=1)
    assert outliers.counted(m, ok=False, started=4.0, config=off) is None
    assert (m.failures, m.calls) == (0, 3)
    m.ejected = True
    assert outliers.counted(m, ok=False, started=5.0, config=cfg) is None
    assert m.calls == 3


# -- probation: a returned instance's first failure before a success ejects it again -------
def returned(*, probation: bool = True) -> tuple[Pool, Member, OutlierConfig]:
    """A pool whose "a" was ejected at 1000 and returned at 1030 (the pool's clock)."""
    clock = [1000.0]
    pool = Pool("orders", rng=random.Random(7), wallclock=lambda: clock[0])
    for iid in ("a", "b", "c"):
        pool.upsert(instance(iid))
    pool.set_ejected(frozenset({"a"}), held=False)
    clock[0] = 1030.0
    pool.set_ejected(frozenset(), held=False)
    return pool, pool.members["a"], OutlierConfig(probation=probation)


def test_a_returned_instance_failing_before_any_success_is_ejected_at_once() -> None:
    _, m, cfg = returned()
    assert m.probation
    reason = outliers.counted(m, ok=False, started=1030.5, config=cfg)
    assert reason == "probation: a call failed before any succeeded since it returned"
    assert m.failures == 1  # one failure, where five would be needed otherwise


def test_a_returned_instance_that_succeeds_first_is_judged_as_any_other() -> None:
    _, m, cfg = returned()
    assert outliers.counted(m, ok=True, started=1030.5, config=cfg) is None
    assert not m.probation
    for n in range(4):
        assert outliers.counted(m, ok=False, started=1031.0 + n, config=cfg) is None
    reason = outliers.counted(m, ok=False, started=1035.0, config=cfg)
    assert reason == "consecutive_failures: 5 failed calls in a row"


def test_without_probation_a_returned_instance_needs_the_full_row() -> None:
    _, m, cfg = returned(probation=False)
    for n in range(4):
        assert outliers.counted(m, ok=False, started=1031.0 + n, config=cfg) is None
    assert outliers.counted(m, ok=False, started=1035.0, config=cfg) is not None


def test_calls_started_before_the_return_are_not_judged() -> None:
    _, m, cfg = returned()
    # in flight since before the ejection ended (a 1 s timeout, reported at 1030.2)
    assert outliers.counted(m, ok=False, started=1029.2, config=cfg) is None
    assert (m.failures, m.calls, m.probation) == (0, 0, True)
    # nor does an old success end the probation
    assert outliers.counted(m, ok=True, started=1029.9, config=cfg) is None
    assert m.probation
    assert outliers.counted(m, ok=False, started=1030.1, config=cfg) is not None


def test_switching_ejection_off_ends_every_probation() -> None:
    _, m, cfg = returned()
    off = OutlierConfig(enabled=False)
    assert outliers.counted(m, ok=False, started=1031.0, config=off) is None
    assert not m.probation
    # switched on again, the returned instance is judged as any other
    assert outliers.counted(m, ok=False, started=1032.0, config=cfg) is None


def test_only_a_return_starts_probation() -> None:
    pool, m, _ = returned()
    assert not pool.members["b"].probation  # never ejected
    pool.set_ejected(frozenset({"a"}), held=False)  # ejected again: its counts restart
    assert not m.probation
    assert m.judged_from == 1030.0


def test_ejected_again_on_probation_lasts_the_next_multiple() -> None:
    state = outliers.eject(None, "a", reason="r", now=1000.0, config=CFG, instances=10).state
    assert state is not None
    state = outliers.release(state, ["a"], now=1030.0, interval_s=10)
    again = outliers.eject(
        state, "a", reason=outliers.probation_reason(), now=1030.2, config=CFG, instances=10
    )
    assert again.ejection is not None
    assert (again.ejection.times, again.ejection.until) == (2, 1030.2 + 60)
