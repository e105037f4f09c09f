"""Pool: candidate sets, zone preference, panic (protect_threshold), errors, hashing by key."""

from __future__ import annotations

from collections import Counter

import pytest
from builders import WALL, instance, pick, pool_of

from schemas.balancer import STRATEGIES
from schemas.registry import Instance
from services.balancer.pool import RING_REBUILD_S, Pool
from services.errors import BadRequest, Unavailable


def picked_ids(pool: Pool, n: int, *, zone: str | None = None) -> Counter[str]:
    return Counter(pick(pool, zone=zone).member.id for _ in range(n))


# -- zones ----------------------------------------------------------------------------


def test_zone_preference_stays_in_the_zone_while_it_has_an_eligible_instance() -> None:
    pool = pool_of(
        instance("eu-1", zone="eu"),
        instance("eu-2", zone="eu"),
        instance("us-1", zone="us"),
        instance("us-2", zone="us"),
    )
    assert set(picked_ids(pool, 12, zone="eu")) == {"eu-1", "eu-2"}
    assert set(picked_ids(pool, 12, zone="us")) == {"us-1", "us-2"}
    assert set(picked_ids(pool, 12)) == {"eu-1", "eu-2", "us-1", "us-2"}


def test_zone_falls_back_to_every_zone_when_none_in_it_can_serve() -> None:
    pool = pool_of(
        instance("eu-1", zone="eu", healthy=False),
        instance("eu-2", zone="eu", drained=True),
        instance("eu-3", zone="eu", weight=0),
        instance("us-1", zone="us"),
        instance("ap-1", zone="ap"),
    )
    assert set(picked_ids(pool, 10, zone="eu")) == {"us-1", "ap-1"}
    assert set(picked_ids(pool, 10, zone="nowhere")) == {"us-1", "ap-1"}


def test_zone_preference_returns_when_the_zone_recovers() -> None:
    pool = pool_of(instance("eu-1", zone="eu", healthy=False), instance("us-1", zone="us"))
    assert pick(pool, zone="eu").member.id == "us-1"
    pool.upsert(instance("eu-1", zone="eu"))
    assert set(picked_ids(pool, 6, zone="eu")) == {"eu-1"}


def test_zone_retry_stays_in_the_zone_while_it_has_an_instance_not_excluded() -> None:
    pool = pool_of(instance("eu-1", zone="eu"), instance("eu-2", zone="eu"), instance("us-1"))
    got = {pick(pool, zone="eu", exclude=("eu-1",)).member.id for _ in range(5)}
    assert got == {"eu-2"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_zone_retry_that_excludes_the_whole_zone_goes_to_another_zone(strategy: str) -> None:
    # The zone is a preference: a retry that has excluded every instance in it must still
    # be served by the rest of the fleet, not answered 503.
    pool = pool_of(
        instance("eu-1", zone="eu"), instance("eu-2", zone="eu"), instance("us-1", zone="us")
    )
    p = pick(pool, strategy, key="user-1", zone="eu", exclude=("eu-1", "eu-2"))
    assert p.member.id == "us-1"
    with pytest.raises(Unavailable, match="3 excluded"):
        pick(pool, strategy, key="user-1", zone="eu", exclude=("eu-1", "eu-2", "us-1"))


# -- panic ----------------------------------------------------------------------------


def half_unhealthy(threshold: float) -> Pool:
    return pool_of(
        instance("a"),
        instance("b"),
        instance("c", healthy=False),
        instance("d", healthy=False),
        threshold=threshold,
    )


def test_panic_at_threshold_picks_unhealthy_too_and_says_so() -> None:
    pool = half_unhealthy(0.5)  # healthy share 0.5 is at the threshold: panic
    picks = [pick(pool) for _ in range(8)]
    assert {p.member.id for p in picks} == {"a", "b", "c", "d"}
    assert all(p.panic for p in picks)


def test_above_the_threshold_there_is_no_panic() -> None:
    pool = half_unhealthy(0.49)
    picks = [pick(pool) for _ in range(8)]
    assert {p.member.id for p in picks} == {"a", "b"}
    assert not any(p.panic for p in picks)


def test_threshold_zero_never_panics() -> None:
    pool = pool_of(instance("a"), *(instance(f"u{n}", healthy=False) for n in range(9)))
    picks = [pick(pool) for _ in range(5)]
    assert {p.member.id for p in picks} == {"a"}
    assert not any(p.panic for p in picks)
    pool.upsert(instance("a", healthy=False))
    with pytest.raises(Unavailable, match="10 unhealthy"):
        pick(pool)


def test_panic_ends_when_enough_recover() -> None:
    pool = half_unhealthy(0.5)
    assert pick(pool).panic
    pool.upsert(instance("c"))  # 3 of 4 healthy
    picks = [pick(pool) for _ in range(6)]
    assert {p.member.id for p in picks} == {"a", "b", "c"}
    assert not any(p.panic for p in picks)


def test_panic_with_every_instance_unhealthy_still_serves() -> None:
    pool = pool_of(instance("a", healthy=False), instance("b", healthy=False), threshold=0.1)
    p = pick(pool)
    assert p.panic
    assert p.member.id in {"a", "b"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_drained_and_weight_zero_are_never_picked_even_in_panic(strategy: str) -> None:
    pool = pool_of(
        instance("a", healthy=False),
        instance("b", healthy=False, drained=True),
        instance("c", drained=True),
        instance("d", weight=0),
        instance("e", healthy=False, weight=0),
        strategy=strategy,
        threshold=0.9,
    )
    got = {pick(pool, key=f"k{n}", now=100.0 + n).member.id for n in range(50)}
    assert got == {"a"}
    assert pick(pool, key="k").panic


def test_panic_zone_without_a_healthy_instance_is_not_preferred() -> None:
    # The contract prefers the zone "when any is healthy": in panic, a zone holding only
    # unhealthy instances must not pull every request away from the healthy ones.
    pool = pool_of(
        instance("eu-1", zone="eu", healthy=False),
        instance("us-1", zone="us"),
        instance("us-2", zone="us", healthy=False),
        threshold=0.5,
    )
    picks = [pick(pool, zone="eu") for _ in range(6)]
    assert all(p.panic for p in picks)
    assert {p.member.id for p in picks} == {"eu-1", "us-1", "us-2"}


# -- errors ---------------------------------------------------------------------------


def test_unknown_strategy_is_400_listing_the_names() -> None:
    pool = pool_of(instance("a"))
    with pytest.raises(BadRequest) as err:
        pick(pool, "fastest")
    assert err.value.code == 400
    assert "'fastest'" in err.value.message
    for name in STRATEGIES:
        assert name in err.value.message


def test_unknown_default_strategy_is_400_too() -> None:
    pool = pool_of(instance("a"), strategy="nope")
    with pytest.raises(BadRequest, match="unknown strategy 'nope'"):
        pick(pool)
    assert pick(pool, "round_robin").member.id == "a"  # a request may still override it


@pytest.mark.parametrize("key", [None, ""])
def test_consistent_hash_without_a_key_is_400(key: str | None) -> None:
    pool = pool_of(instance("a"))
    with pytest.raises(BadRequest, match="key") as err:
        pick(pool, "consistent_hash", key=key)
    assert err.value.code == 400


def test_bad_request_is_raised_before_looking_for_instances() -> None:
    pool = pool_of(instance("a", healthy=False))
    with pytest.raises(BadRequest):
        pick(pool, "fastest")


def test_empty_pool_is_503() -> None:
    pool = pool_of()
    with pytest.raises(Unavailable, match="0 registered") as err:
        pick(pool)
    assert err.value.code == 503


def test_most_connections_503_says_the_rest_are_full() -> None:
    pool = pool_of(instance("a"), instance("b", healthy=False), strategy="most_connections")
    a = pool.members["a"]
    a.heartbeat(a.capacity, 100.0)
    with pytest.raises(Unavailable) as err:
        pick(pool)
    assert "2 registered, 1 unhealthy" in err.value.message
    assert "max_inflight capacity" in err.value.message


# -- pick result and membership -------------------------------------------------------


def test_pick_names_the_strategy_that_chose() -> None:
    pool = pool_of(instance("a"), instance("b"), strategy="weighted")
    assert pick(pool).strategy == "weighted"
    assert pick(pool, "random").strategy == "random"
    assert pick(pool, "consistent_hash", key="u1").strategy == "consistent_hash"


def test_remove_takes_the_instance_out_of_every_strategy() -> None:
    pool = pool_of(instance("a"), instance("b"))
    assert pool.remove("a") is not None
    assert pool.remove("a") is None
    for strategy in STRATEGIES:
        assert pick(pool, strategy, key="k").member.id == "b"


def test_upsert_updates_what_a_pick_returns() -> None:
    pool = pool_of(instance("a"))
    pool.upsert(
        Instance(
            instance_id="a",
            host="10.9.9.9",
            port=9090,
            weight=100,
            zone="eu",
            version="2.0",
            metadata={"path": "/v2"},
            healthy=True,
            drained=False,
            inflight=0,
            registered_at=WALL,
            last_seen=WALL,
        )
    )
    m = pick(pool).member
    assert (m.host, m.port, m.zone, m.version, m.metadata) == (
        "10.9.9.9",
        9090,
        "eu",
        "2.0",
        {"path": "/v2"},
    )


# -- consistent_hash through the pool -------------------------------------------------


def owners(pool: Pool, keys: list[str], *, now: float, exclude: tuple[str, ...] = ()) -> list[str]:
    return [pick(pool, "consistent_hash", key=k, exclude=exclude, now=now).member.id for k in keys]


KEYS = [f"user-{n}" for n in range(10_000)]
TEN = [f"node-{n}" for n in range(10)]


def test_consistent_hash_same_key_same_instance_on_every_replica() -> None:
    one = pool_of(*(instance(i) for i in TEN))
    other = pool_of(*(instance(i) for i in reversed(TEN)))  # another balancer replica
    keys = KEYS[:2000]
    first = owners(one, keys, now=100.0)
    assert owners(one, keys, now=101.0) == first
    assert owners(other, keys, now=100.0) == first
    assert len(set(first)) == len(TEN)  # and keys do spread over all of them


def test_consistent_hash_removing_one_moves_only_its_keys() -> None:
    pool = pool_of(*(instance(i) for i in TEN))
    before = owners(pool, KEYS, now=100.0)
    pool.remove("node-3")
    soon = owners(pool, KEYS, now=100.0)  # before the ring is rebuilt: node-3 is skipped
    after = owners(pool, KEYS, now=100.0 + 2 * RING_REBUILD_S)
    assert soon == after
    moved = [k for k, b, a in zip(KEYS, before, after, strict=True) if b != a]
    assert moved  # node-3 held some keys
    assert all(b == "node-3" for b, a in zip(before, after, strict=True) if b != a)
    assert "node-3" not in after
    assert 0.05 <= len(moved) / len(KEYS) <= 0.15  # about 1/10


def test_consistent_hash_adding_one_moves_about_one_nth_all_to_the_newcomer() -> None:
    pool = pool_of(*(instance(i) for i in TEN))
    before = owners(pool, KEYS, now=100.0)
    pool.upsert(instance("node-new"))
    after = owners(pool, KEYS, now=100.0 + 2 * RING_REBUILD_S)
    moved = [a for b, a in zip(before, after, strict=True) if b != a]
    assert set(moved) == {"node-new"}
    assert 0.05 <= len(moved) / len(KEYS) <= 0.14  # about 1/11


def test_consistent_hash_key_share_follows_weight() -> None:
    pool = pool_of(
        instance("light", weight=100), instance("mid", weight=200), instance("heavy", weight=300)
    )
    share = Counter(owners(pool, KEYS, now=100.0))
    assert share["light"] / len(KEYS) == pytest.approx(1 / 6, abs=0.05)
    assert share["mid"] / len(KEYS) == pytest.approx(2 / 6, abs=0.06)
    assert share["heavy"] / len(KEYS) == pytest.approx(3 / 6, abs=0.07)
    assert share["light"] < share["mid"] < share["heavy"]


@pytest.mark.parametrize("how", ["unhealthy", "excluded", "drained"])
def test_consistent_hash_skips_an_owner_that_cannot_serve_to_the_next_on_the_ring(
    how: str,
) -> None:
    pool = pool_of(*(instance(i) for i in TEN))
    without = pool_of(*(instance(i) for i in TEN if i != "node-7"))
    keys = KEYS[:3000]
    before = owners(pool, keys, now=100.0)
    exclude: tuple[str, ...] = ()
    if how == "excluded":
        exclude = ("node-7",)
    else:
        pool.upsert(instance("node-7", healthy=how != "unhealthy", drained=how == "drained"))
    after = owners(pool, keys, now=100.0, exclude=exclude)
    assert "node-7" not in after
    # Keys elsewhere stay put; node-7's go where a ring without node-7 would send them.
    assert after == owners(without, keys, now=100.0)
    assert all(b == a for b, a in zip(before, after, strict=True) if b != "node-7")
    # and back: the same keys return to node-7 once it can serve (no ring rebuild needed)
    pool.upsert(instance("node-7"))
    assert owners(pool, keys, now=100.0) == before


def test_consistent_hash_in_a_zone_keeps_keys_on_the_zones_instances() -> None:
    pool = pool_of(*(instance(i, zone="eu" if i < "node-5" else "us") for i in TEN))
    got = {pick(pool, "consistent_hash", key=k, zone="eu").member.zone for k in KEYS[:500]}
    assert got == {"eu"}
