"""Member (in-flight estimate, capacity, peak EWMA) and LoadIndex, with floats for clocks."""

from __future__ import annotations

import math
import random

import pytest
from builders import instance

from services.balancer.members import DEFAULT_CAPACITY, TAU_S, LoadIndex, Member

# -- the in-flight estimate -----------------------------------------------------------


def test_load_starts_from_the_inflight_the_registry_last_saw() -> None:
    assert Member(instance(inflight=4)).load == 4


def test_load_is_heartbeat_inflight_plus_picks_since_that_heartbeat() -> None:
    m = Member(instance())
    m.heartbeat(3, 10.0)
    m.picked("p1", 10.5)
    m.picked("p2", 11.0)
    assert m.load == 5
    assert m.closed("p1")
    assert m.load == 4


def test_a_heartbeat_absorbs_the_picks_made_before_it() -> None:
    m = Member(instance())
    m.heartbeat(0, 10.0)
    for n in range(4):
        m.picked(f"p{n}", 11.0)
    assert m.load == 4
    m.heartbeat(3, 12.0)  # the instance counts what it serves, those calls included
    assert m.load == 3
    # A call picked before the heartbeat ends: it was in the instance's figure, so the
    # instance now serves one fewer.
    assert m.closed("p0")
    assert m.load == 2
    # One that failed (a timeout, say) may still run there: the next heartbeat tells.
    assert m.closed("p1", finished=False)
    assert m.load == 2
    m.picked("late", 13.0)
    assert m.load == 3
    assert m.closed("late")
    assert m.load == 2
    # The heartbeat's figure never goes below zero, whatever reports arrive.
    assert m.closed("p2")
    assert m.closed("p3")
    assert m.load == 0
    m.heartbeat(0, 14.0)
    assert m.load == 0


def test_a_pick_at_the_same_clock_reading_as_the_heartbeat_still_closes() -> None:
    # Coarse monotonic clocks (15.6 ms on Windows before Python 3.13) give a heartbeat and
    # the next picks the same reading; such picks came after the heartbeat all the same.
    m = Member(instance())
    m.heartbeat(1, 50.0)
    m.picked("p", 50.0)
    assert m.load == 2
    assert m.closed("p")
    assert m.load == 1


def test_picks_from_the_very_start_of_the_clock_close() -> None:
    m = Member(instance())  # never heartbeat through the balancer yet
    m.picked("p", 0.0)
    assert m.load == 1
    assert m.closed("p")
    assert m.load == 0


def test_closing_an_unknown_or_already_closed_pick_changes_nothing() -> None:
    m = Member(instance())
    m.picked("p", 1.0)
    assert not m.closed("nope")
    assert m.load == 1
    assert m.closed("p")
    assert not m.closed("p")
    assert m.load == 0
    assert not m.closed("")  # nothing open at all


def test_a_report_without_a_pick_token_closes_the_oldest_open_pick() -> None:
    m = Member(instance())
    m.picked("old", 1.0)
    m.picked("new", 2.0)
    assert m.closed("")
    assert m.load == 1
    assert not m.closed("old")  # it was the one closed
    assert m.closed("new")


def test_load_never_goes_below_the_heartbeat_figure() -> None:
    m = Member(instance())
    for n in range(3):
        m.picked(f"p{n}", 1.0)
    m.heartbeat(0, 2.0)
    for n in range(3):
        m.closed(f"p{n}")
    assert m.load == 0


# -- eligibility and capacity ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "eligible"),
    [
        ({}, True),
        ({"healthy": False}, False),
        ({"drained": True}, False),
        ({"weight": 0}, False),
        ({"weight": 1}, True),
    ],
)
def test_eligible_only_when_healthy_undrained_and_weighted(
    kw: dict[str, object], eligible: bool
) -> None:
    assert Member(instance(**kw)).eligible is eligible  # type: ignore[arg-type]


def test_update_follows_the_registry() -> None:
    m = Member(instance())
    m.update(instance(healthy=False, metadata={"max_inflight": "2"}))
    assert not m.eligible
    assert m.capacity == 2


@pytest.mark.parametrize(
    ("metadata", "capacity"),
    [
        ({"max_inflight": "5"}, 5),
        ({"max_inflight": "1"}, 1),
        ({}, DEFAULT_CAPACITY),
        ({"max_inflight": ""}, DEFAULT_CAPACITY),
        ({"max_inflight": "many"}, DEFAULT_CAPACITY),
        ({"max_inflight": "0"}, DEFAULT_CAPACITY),
        ({"max_inflight": "-3"}, DEFAULT_CAPACITY),
    ],
)
def test_capacity_comes_from_max_inflight_metadata(metadata: dict[str, str], capacity: int) -> None:
    m = Member(instance(metadata=metadata))
    m.heartbeat(capacity - 1, 1.0)
    assert m.has_room()
    m.picked("p", 2.0)
    assert not m.has_room()


# -- peak EWMA ------------------------------------------------------------------------


def test_an_idle_instance_without_samples_costs_nothing_and_a_busy_one_a_lot() -> None:
    m = Member(instance())
    assert m.score(0.0) == 0.0
    m.picked("p", 0.0)
    other = Member(instance("b"))
    other.observe(900.0, 0.0)  # even a slow known instance, idle, beats an unknown busy one
    assert m.score(0.0) > other.score(0.0)


def test_first_sample_sets_the_cost_and_the_score_weighs_it_by_load_plus_one() -> None:
    m = Member(instance())
    m.observe(40.0, 5.0)
    assert m.score(5.0) == pytest.approx(40.0)
    m.heartbeat(2, 5.0)
    assert m.score(5.0) == pytest.approx(40.0 * 3)


def test_a_slower_sample_raises_the_cost_at_once() -> None:
    m = Member(instance())
    m.observe(10.0, 0.0)
    m.observe(250.0, 0.001)
    assert m.score(0.001) == pytest.approx(250.0)


def test_a_faster_sample_pulls_the_cost_down_by_the_time_since_the_last() -> None:
    m = Member(instance())
    m.observe(200.0, 0.0)
    m.observe(10.0, TAU_S)  # one tau later: w = e^-1
    w = math.exp(-1.0)
    assert m.score(TAU_S) == pytest.approx(200.0 * w + 10.0 * (1 - w))
    m.observe(10.0, TAU_S)  # no time passed: w = 1, the cost does not move
    assert m.score(TAU_S) == pytest.approx(200.0 * w + 10.0 * (1 - w))


def test_fast_samples_converge_to_their_latency() -> None:
    m = Member(instance())
    m.observe(500.0, 0.0)
    for n in range(1, 200):
        m.observe(12.0, n * 1.0)
    assert m.score(199.0) == pytest.approx(12.0, rel=0.01)


def test_the_cost_decays_while_no_sample_comes_so_a_slow_instance_is_retried() -> None:
    slow, fast = Member(instance("slow")), Member(instance("fast"))
    slow.observe(400.0, 0.0)
    fast.observe(20.0, 0.0)
    assert slow.score(1.0) > fast.score(1.0)
    assert slow.score(TAU_S) == pytest.approx(400.0 * math.exp(-1.0))
    fast.observe(20.0, 60.0)  # the fast one keeps being measured, the slow one is not
    assert slow.score(60.0) < fast.score(60.0)


# -- LoadIndex ------------------------------------------------------------------------


def members(n: int, **kw: object) -> list[Member]:
    return [Member(instance(f"m{k}", **kw)) for k in range(n)]  # type: ignore[arg-type]


def test_lowest_and_highest_follow_heartbeats_and_picks() -> None:
    ms = members(3)
    index = LoadIndex(ms)
    a, b, c = ms
    a.heartbeat(5, 1.0)
    b.heartbeat(2, 1.0)
    c.heartbeat(9, 1.0)
    assert index.lowest(frozenset()) is b
    assert index.highest(frozenset()) is c
    for n in range(4):
        b.picked(f"b{n}", 2.0)  # b: 6
    assert index.lowest(frozenset()) is a
    c.heartbeat(0, 3.0)
    assert index.lowest(frozenset()) is c
    assert index.highest(frozenset()) is b


def test_ties_go_to_the_one_that_waited_longest() -> None:
    ms = members(3)
    index = LoadIndex(ms)
    assert index.lowest(frozenset()) is ms[0]
    ms[0].picked("x", 1.0)
    ms[0].closed("x")  # back to 0, now behind m1 and m2
    assert index.lowest(frozenset()) is ms[1]


def test_exclude_skips_to_the_next_best() -> None:
    ms = members(3)
    index = LoadIndex(ms)
    for m, load in zip(ms, (1, 2, 3), strict=True):
        m.heartbeat(load, 1.0)
    assert index.lowest(frozenset({"m0"})) is ms[1]
    assert index.highest(frozenset({"m2"})) is ms[1]
    assert index.lowest(frozenset({"m0", "m1", "m2"})) is None


def test_room_only_keeps_members_below_their_capacity() -> None:
    ms = members(2, metadata={"max_inflight": "2"})
    index = LoadIndex(ms, room_only=True)
    a, b = ms
    a.heartbeat(1, 1.0)
    assert index.highest(frozenset()) is a
    a.picked("p", 2.0)  # a: 2, full
    assert index.highest(frozenset()) is b
    b.heartbeat(5, 3.0)  # over capacity
    assert index.highest(frozenset()) is None
    a.closed("p")
    assert index.highest(frozenset()) is a


def test_a_closed_index_stops_following_its_members() -> None:
    ms = members(2)
    index = LoadIndex(ms)
    other = LoadIndex(ms)
    index.close()
    assert ms[0].watchers == [other]
    ms[0].heartbeat(7, 1.0)
    assert other.lowest(frozenset()) is ms[1]
    assert other.highest(frozenset()) is ms[0]
    index.close()  # twice is harmless


def test_index_agrees_with_a_full_scan_under_random_traffic() -> None:
    rng = random.Random(8)
    ms = [
        Member(instance(f"m{k}", metadata={"max_inflight": str(rng.randint(1, 8))}))
        for k in range(12)
    ]
    low, high = LoadIndex(ms), LoadIndex(ms, room_only=True)
    open_picks: list[tuple[Member, str]] = []
    for step in range(4000):
        now = float(step)
        r = rng.random()
        if r < 0.45:
            m = rng.choice(ms)
            m.picked(f"p{step}", now)
            open_picks.append((m, f"p{step}"))
        elif r < 0.85 and open_picks:
            m, token = open_picks.pop(rng.randrange(len(open_picks)))
            m.closed(token)
        else:
            rng.choice(ms).heartbeat(rng.randint(0, 10), now)
        exclude = frozenset(rng.sample([m.id for m in ms], rng.randint(0, 3)))
        rest = [m for m in ms if m.id not in exclude]
        got = low.lowest(exclude)
        assert got is not None
        assert got.load == min(m.load for m in rest), step
        with_room = [m for m in rest if m.load < m.capacity]
        best = high.highest(exclude)
        if with_room:
            assert best is not None
            assert best.load == max(m.load for m in with_room), step
            assert best.has_room()
        else:
            assert best is None, step
