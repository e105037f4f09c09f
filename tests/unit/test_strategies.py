"""The seven strategies, driven through Pool.pick as the balancer worker drives them.

No NATS: instances are schemas.registry.Instance structs, clocks are plain floats. Where
a strategy follows load, each pick is recorded on the member (`picked`) as the worker
does, and closed (`closed`) where a call report would close it.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from builders import instance, pick, pool_of

from schemas.balancer import STRATEGIES
from services.balancer.strategies import EXACT_LIMIT
from services.errors import Unavailable

if TYPE_CHECKING:
    from services.balancer.pool import Pool


def ids(
    pool: Pool,
    n: int,
    strategy: str | None = None,
    *,
    exclude: tuple[str, ...] = (),
    now: float = 100.0,
) -> list[str]:
    return [pick(pool, strategy, exclude=exclude, now=now).member.id for _ in range(n)]


_tokens = itertools.count()


def take(pool: Pool, strategy: str | None = None, *, now: float = 100.0) -> str:
    """Pick and record the pick as in flight, as the worker does; returns the pick token."""
    chosen = pick(pool, strategy, now=now).member
    token = f"t{next(_tokens)}"
    chosen.picked(token, now)
    return token


def nginx_swrr(
    weights: dict[str, int], picks: int, excludes: list[frozenset[str]] | None = None
) -> list[str]:
    """Nginx's smooth weighted round-robin, written out naively (O(n) a pick).

    Excluded (tried) peers are skipped without gaining weight, and the total is the sum of
    the weights that took part, exactly as nginx's ngx_http_upstream_get_peer does.
    """
    cur = dict.fromkeys(weights, 0)
    out = []
    for i in range(picks):
        skip = excludes[i] if excludes else frozenset()
        total, best = 0, None
        for name, w in weights.items():  # insertion order = instance-id order here
            if name in skip:
                continue
            cur[name] += w
            total += w
            if best is None or cur[name] > cur[best]:
                best = name
        assert best is not None
        cur[best] -= total
        out.append(best)
    return out


# -- weighted -------------------------------------------------------------------------


def test_weighted_5_1_1_gives_the_contracts_interleaving() -> None:
    pool = pool_of(instance("a", weight=5), instance("b", weight=1), instance("c", weight=1))
    assert "".join(ids(pool, 14, "weighted")) == "aabacaa" * 2


def weight_sets() -> list[dict[str, int]]:
    rng = random.Random(2024)
    sets = [
        {"a": 3, "b": 2, "c": 1},
        {"a": 1, "b": 1},
        {"solo": 7},
        {f"m{i:03}": rng.choice((1, 5, 10)) for i in range(150)},  # few distinct weights
        {f"m{i:02}": w for i, w in enumerate(rng.sample(range(1, 400), 25))},  # all distinct
        {f"m{i:02}": rng.randint(1, 50) for i in range(40)},
    ]
    sets.extend({f"m{i}": rng.randint(1, 9) for i in range(rng.randint(2, 12))} for _ in range(4))
    return sets


@pytest.mark.parametrize("weights", weight_sets(), ids=lambda w: f"{len(w)}members")
def test_weighted_every_window_of_sum_w_picks_holds_each_member_w_times(
    weights: dict[str, int],
) -> None:
    pool = pool_of(*(instance(i, weight=w) for i, w in weights.items()))
    total = sum(weights.values())
    got = ids(pool, 3 * total, "weighted")

    window = Counter(got[:total])
    assert window == Counter(weights)
    for start in range(1, 2 * total + 1):  # slide the window one pick at a time
        window[got[start - 1]] -= 1
        window[got[start + total - 1]] += 1
        assert +window == Counter(weights), f"window starting at pick {start}"


@pytest.mark.parametrize("weights", weight_sets(), ids=lambda w: f"{len(w)}members")
def test_weighted_matches_nginx_pick_for_pick(weights: dict[str, int]) -> None:
    pool = pool_of(*(instance(i, weight=w) for i, w in sorted(weights.items())))
    n = 2 * sum(weights.values())
    assert ids(pool, n, "weighted") == nginx_swrr(dict(sorted(weights.items())), n)


def test_weighted_exclude_never_returns_an_excluded_instance() -> None:
    pool = pool_of(*(instance(i, weight=w) for i, w in zip("abcde", (5, 1, 3, 2, 4), strict=True)))
    rng = random.Random(5)
    for _ in range(500):
        excluded = frozenset(rng.sample("abcde", rng.randint(1, 4)))
        assert pick(pool, "weighted", exclude=tuple(excluded)).member.id not in excluded


def test_weighted_retries_that_exclude_the_heaviest_follow_the_remaining_weights() -> None:
    # A retry that excludes the big instance should land on b and c as 9:1, not evenly.
    pool = pool_of(instance("a", weight=90), instance("b", weight=9), instance("c", weight=1))
    got = Counter(ids(pool, 1000, "weighted", exclude=("a",)))
    assert set(got) == {"b", "c"}
    assert 850 <= got["b"] <= 950


def test_weighted_exclude_keeps_proportions_among_the_rest() -> None:
    pool = pool_of(instance("a", weight=3), instance("b", weight=2), instance("c", weight=1))
    got = Counter(ids(pool, 600, "weighted", exclude=("c",)))
    assert got["c"] == 0
    assert got["a"] / got["b"] == pytest.approx(3 / 2, rel=0.1)


def test_weighted_mixed_retries_match_nginx_skipping_tried_peers() -> None:
    weights = {"a": 5, "b": 1, "c": 3, "d": 2}
    rng = random.Random(11)
    excludes = [
        frozenset(rng.sample(sorted(weights), rng.randint(1, 3)))
        if rng.random() < 0.3
        else frozenset()
        for _ in range(400)
    ]
    pool = pool_of(*(instance(i, weight=w) for i, w in weights.items()))
    got = [pick(pool, "weighted", exclude=tuple(ex)).member.id for ex in excludes]
    assert got == nginx_swrr(weights, 400, excludes)


@pytest.mark.parametrize("plain_first", [0, 1, 6, 13, 50])
def test_weighted_equal_weights_with_retries_match_nginx(plain_first: int) -> None:
    # All one weight: the picker rotates without its heap until the first retry, which
    # must then find exactly the state nginx would be in.
    weights = dict.fromkeys("abcdefg", 3)
    rng = random.Random(plain_first)
    excludes: list[frozenset[str]] = [frozenset()] * plain_first + [
        frozenset(rng.sample(sorted(weights), rng.randint(1, 4)))
        if rng.random() < 0.3
        else frozenset()
        for _ in range(300)
    ]
    pool = pool_of(*(instance(i, weight=w) for i, w in weights.items()))
    got = [pick(pool, "weighted", exclude=tuple(ex)).member.id for ex in excludes]
    assert got == nginx_swrr(weights, len(excludes), excludes)


def test_weighted_after_retries_the_excluded_one_gets_no_burst() -> None:
    pool = pool_of(instance("a", weight=1), instance("b", weight=1))
    ids(pool, 50, "weighted", exclude=("a",))
    # Fifty retries went to b; plain picks now alternate instead of sending a fifty in a row.
    later = ids(pool, 10, "weighted")
    assert Counter(later) == {"a": 5, "b": 5}


def test_weighted_state_resets_when_the_candidate_set_changes() -> None:
    insts = [instance("a", weight=5), instance("b", weight=1), instance("c", weight=1)]
    pool = pool_of(*insts)
    assert ids(pool, 3, "weighted") == ["a", "a", "b"]

    pool.upsert(instance("d", weight=2))  # a new member: a fresh cycle over a, b, c, d
    expected = nginx_swrr({"a": 5, "b": 1, "c": 1, "d": 2}, 9)
    assert ids(pool, 9, "weighted") == expected

    pool.upsert(instance("d", weight=2, healthy=False))  # back to a, b, c: starts over
    assert "".join(ids(pool, 7, "weighted")) == "aabacaa"

    pool.upsert(instance("a", weight=1))  # a weight change restarts too
    assert ids(pool, 3, "weighted") == ["a", "b", "c"]


def test_weighted_unchanged_upsert_does_not_restart_the_cycle() -> None:
    pool = pool_of(instance("a", weight=5), instance("b", weight=1), instance("c", weight=1))
    first = ids(pool, 3, "weighted")
    pool.upsert(instance("b", weight=1))  # same as before: e.g. a replayed event
    assert "".join(first + ids(pool, 4, "weighted")) == "aabacaa"


# -- round_robin and random -----------------------------------------------------------


def test_round_robin_rotates_strictly_in_instance_id_order() -> None:
    pool = pool_of(instance("c"), instance("a"), instance("b"))  # registered out of order
    assert ids(pool, 7, "round_robin") == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_ignores_weights_but_skips_weight_zero() -> None:
    pool = pool_of(instance("a", weight=1), instance("b", weight=500), instance("c", weight=0))
    assert ids(pool, 4, "round_robin") == ["a", "b", "a", "b"]


def chi_square(counts: Counter[str], names: list[str], n: int) -> float:
    expected = n / len(names)
    return sum((counts[name] - expected) ** 2 / expected for name in names)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_is_roughly_uniform(seed: int) -> None:
    names = [f"i{k}" for k in range(8)]
    pool = pool_of(*(instance(i, weight=1 + 50 * k) for k, i in enumerate(names)), seed=seed)
    n = 16_000
    counts = Counter(ids(pool, n, "random"))
    assert set(counts) == set(names)
    # 7 degrees of freedom: p = 0.001 is at 24.3; 40 is far out yet catches any real skew
    # (weights are deliberately unequal: random must ignore them).
    assert chi_square(counts, names, n) < 40


def test_random_with_exclude_is_uniform_over_the_rest() -> None:
    names = [f"i{k}" for k in range(6)]
    pool = pool_of(*(instance(i) for i in names), seed=9)
    n = 12_000
    counts = Counter(ids(pool, n, "random", exclude=("i0", "i1", "i2", "i3")))
    assert set(counts) == {"i4", "i5"}
    assert chi_square(counts, ["i4", "i5"], n) < 15


# -- every strategy -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_respects_exclude(strategy: str) -> None:
    pool = pool_of(*(instance(i, metadata={"max_inflight": "1000"}) for i in "abcdef"))
    rng = random.Random(3)
    seen = set()
    for n in range(300):
        excluded = tuple(rng.sample("abcdef", rng.randint(1, 5)))
        token_now = 100.0 + n
        key = f"user-{n}"
        chosen = pick(pool, strategy, key=key, exclude=excluded, now=token_now).member
        chosen.picked(f"x{n}", token_now)
        assert chosen.id not in excluded
        seen.add(chosen.id)
    assert len(seen) >= 2  # it did pick, among several


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_skips_unhealthy_drained_and_weight_zero(strategy: str) -> None:
    pool = pool_of(
        instance("a", healthy=False),
        instance("b", drained=True),
        instance("c", weight=0),
        instance("d"),
    )
    got = {pick(pool, strategy, key=f"k{n}", now=100.0 + n).member.id for n in range(100)}
    assert got == {"d"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_eligible_instance_is_503_naming_the_counts(strategy: str) -> None:
    pool = pool_of(
        instance("a", healthy=False),
        instance("b", drained=True),
        instance("c", weight=0),
        instance("d"),
    )
    with pytest.raises(Unavailable) as err:
        pick(pool, strategy, key="k", exclude=("d",))
    assert err.value.code == 503
    assert err.value.message.startswith("no instance of 'orders' can take the request")
    assert "4 registered, 1 unhealthy, 1 drained, 1 with weight 0, 1 excluded" in err.value.message


# -- least_connections ----------------------------------------------------------------


def test_least_connections_picks_the_true_minimum_of_reported_and_open_requests() -> None:
    names = [f"i{k}" for k in range(6)]
    pool = pool_of(*(instance(i) for i in names), strategy="least_connections")
    members = pool.members
    rng = random.Random(42)
    # An independent model: load = inflight at the last heartbeat, less the calls it
    # counted that ended since (reported done), + open picks since.
    hb = dict.fromkeys(names, 0)
    since: dict[str, set[str]] = {i: set() for i in names}
    open_picks: list[tuple[str, str]] = []
    now = 100.0
    for step in range(3000):
        now += 0.01
        action = rng.random()
        if action < 0.55:
            least = min(hb[i] + len(since[i]) for i in names)
            chosen = pick(pool, now=now).member
            assert hb[chosen.id] + len(since[chosen.id]) == least, f"step {step}"
            token = f"p{step}"
            chosen.picked(token, now)
            since[chosen.id].add(token)
            open_picks.append((chosen.id, token))
        elif action < 0.9 and open_picks:
            iid, token = open_picks.pop(rng.randrange(len(open_picks)))
            finished = rng.random() < 0.8  # else it failed, and may still run there
            assert members[iid].closed(token, finished=finished)
            if token in since[iid]:
                since[iid].discard(token)
            elif finished:
                hb[iid] = max(0, hb[iid] - 1)
        else:
            iid = rng.choice(names)
            hb[iid] = rng.randint(0, 6)
            members[iid].heartbeat(hb[iid], now)
            since[iid].clear()
        for i in names:
            assert members[i].load == hb[i] + len(since[i])


def test_least_connections_rotates_among_equals_even_when_calls_finish_at_once() -> None:
    pool = pool_of(instance("a"), instance("b"), instance("c"), strategy="least_connections")
    got = []
    for n in range(7):
        chosen = pick(pool, now=100.0 + n).member
        chosen.picked(f"r{n}", 100.0 + n)
        assert chosen.closed(f"r{n}")  # the call report arrives before the next resolve
        got.append(chosen.id)
    assert got == ["a", "b", "c", "a", "b", "c", "a"]


def test_least_connections_closing_a_pick_and_a_heartbeat_move_the_choice() -> None:
    pool = pool_of(
        instance("a", inflight=2), instance("b", inflight=2), strategy="least_connections"
    )
    a, b = pool.members["a"], pool.members["b"]
    a.heartbeat(2, 100.0)
    b.heartbeat(2, 100.0)
    t1 = take(pool, now=101.0)  # a: 3
    take(pool, now=101.0)  # b: 3
    take(pool, now=101.0)  # a: 4
    assert (a.load, b.load) == (4, 3)
    assert pick(pool, now=101.0).member.id == "b"
    assert a.closed(t1)  # a report closes one of a's calls
    assert a.load == 3
    b.heartbeat(0, 102.0)  # b says it is idle now; its open picks are in that figure
    assert b.load == 0
    assert [pick(pool, now=102.0).member.id for _ in range(2)] == ["b", "b"]


# -- most_connections -----------------------------------------------------------------


def test_most_connections_packs_onto_one_instance_until_full_then_moves_on() -> None:
    cap = {"max_inflight": "3"}
    pool = pool_of(*(instance(i, metadata=cap) for i in "abc"), strategy="most_connections")
    got = []
    for n in range(9):
        chosen = pick(pool, now=100.0).member
        chosen.picked(f"m{n}", 100.0)
        got.append(chosen.id)
    assert got == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    with pytest.raises(Unavailable, match="max_inflight"):
        pick(pool)
    assert pool.members["b"].closed("m4")  # b has room again
    assert pick(pool).member.id == "b"


def test_most_connections_prefers_the_busiest_that_has_room() -> None:
    pool = pool_of(
        instance("a", metadata={"max_inflight": "10"}),
        instance("b", metadata={"max_inflight": "8"}),
        instance("c", metadata={"max_inflight": "10"}),
        strategy="most_connections",
    )
    for iid, load in (("a", 5), ("b", 8), ("c", 2)):
        pool.members[iid].heartbeat(load, 100.0)
    assert pick(pool).member.id == "a"  # b is busier but full
    pool.members["c"].heartbeat(7, 101.0)
    assert pick(pool).member.id == "c"


def test_most_connections_follows_a_changed_max_inflight() -> None:
    # An operator's metadata override lowers a's capacity below its current load.
    pool = pool_of(
        instance("a", metadata={"max_inflight": "10"}),
        instance("b", metadata={"max_inflight": "10"}),
        strategy="most_connections",
    )
    for n in range(3):
        take(pool, now=100.0 + n)
    assert pool.members["a"].load == 3
    pool.upsert(instance("a", metadata={"max_inflight": "2"}))
    assert pick(pool).member.id == "b"
    pool.upsert(instance("a", metadata={"max_inflight": "20"}))  # and raises it again
    assert pick(pool).member.id == "a"


# -- least_response_time --------------------------------------------------------------


def test_least_response_time_weighs_latency_by_requests_in_flight() -> None:
    pool = pool_of(instance("a"), instance("b"), strategy="least_response_time")
    a, b = pool.members["a"], pool.members["b"]
    a.observe(10.0, 100.0)
    b.observe(30.0, 100.0)
    assert pick(pool).member.id == "a"
    a.heartbeat(3, 100.0)  # 10 x 4 = 40 against 30 x 1
    assert pick(pool).member.id == "b"
    a.heartbeat(1, 100.0)  # 10 x 2 = 20 against 30
    assert pick(pool).member.id == "a"


def test_least_response_time_turns_away_at_once_from_a_slow_sample() -> None:
    pool = pool_of(instance("a"), instance("b"), strategy="least_response_time")
    a, b = pool.members["a"], pool.members["b"]
    a.observe(10.0, 100.0)
    b.observe(20.0, 100.0)
    assert pick(pool, now=100.0).member.id == "a"
    a.observe(500.0, 100.5)  # one slow call: the peak takes it whole
    assert pick(pool, now=100.5).member.id == "b"
    # Fast samples on a pull its cost down again over tau (10 s).
    for n in range(1, 60):
        a.observe(10.0, 100.5 + n)
        b.observe(20.0, 100.5 + n)
    assert pick(pool, now=160.0).member.id == "a"


def test_least_response_time_above_exact_limit_avoids_a_20x_slower_instance() -> None:
    names = [f"i{k:03}" for k in range(EXACT_LIMIT + 36)]
    pool = pool_of(*(instance(i) for i in names), strategy="least_response_time", seed=4)
    for i in names:
        pool.members[i].observe(10.0, 100.0)
    pool.members["i050"].observe(200.0, 100.0)
    got = Counter(ids(pool, 5000, now=100.0))
    # Two random choices take the slow one only when both draws are it: p = 1/100**2.
    # Uniform random would send it 50 of these 5000.
    assert got["i050"] <= 3
    assert len(got) >= len(names) - 5  # and the rest is spread, not all on one


def test_least_response_time_tries_a_new_instance_while_it_is_idle() -> None:
    pool = pool_of(instance("a"), instance("b"), strategy="least_response_time")
    pool.members["a"].observe(5.0, 100.0)
    # b has no sample yet: free while idle, then costly once it has a call open.
    take(pool)
    assert pool.members["b"].load == 1
    assert pick(pool).member.id == "a"
