"""Slow start: a new instance's weight ramps up over the service's warmup_s."""

from __future__ import annotations

import collections
from datetime import UTC, datetime

from builders import instance, pick
from msgspec import structs

from schemas.governor import ServiceConfig
from services.balancer.pool import Pool

T0 = 1_000_000.0


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def warm_pool(clock: list[float], warmup_s: float) -> Pool:
    pool = Pool("orders", wallclock=lambda: clock[0])
    pool.configure(ServiceConfig(service="orders", strategy="weighted", warmup_s=warmup_s))
    old = structs.replace(instance("old"), registered_at=at(T0 - 3600))
    new = structs.replace(instance("new"), registered_at=at(T0))
    pool.upsert(old)
    pool.upsert(new)
    return pool


def shares(pool: Pool, n: int = 1000) -> collections.Counter[str]:
    return collections.Counter(pick(pool).member.id for _ in range(n))


def test_a_step_boundary_is_not_a_rebuild_on_every_pick() -> None:
    clock = [T0 + 5.0]  # exactly half way: step 6 (60 %), until T0 + 6
    pool = warm_pool(clock, warmup_s=10)
    assert shares(pool, 160)["new"] == 60


def test_a_new_instance_starts_at_a_tenth_and_ramps_to_its_weight() -> None:
    clock = [T0 + 1.0]  # 1 s into a 100 s warm-up: the first step, 10 %
    pool = warm_pool(clock, warmup_s=100)
    first = shares(pool, 1100)
    assert first["new"] == 100  # weights 100 : 10 -> exactly 1000 : 100 over 1100 picks
    clock[0] = T0 + 55.0  # step 6 of 10
    mid = shares(pool, 1600)
    assert mid["new"] == 600
    clock[0] = T0 + 100.0  # warm
    assert shares(pool, 1000)["new"] == 500


def test_no_warmup_means_full_weight_at_once() -> None:
    clock = [T0 + 1.0]
    pool = warm_pool(clock, warmup_s=0)
    assert shares(pool, 1000)["new"] == 500


def test_weight_steps_up_without_any_membership_change() -> None:
    clock = [T0 + 4.5]
    pool = warm_pool(clock, warmup_s=10)  # step 5 of 10: weight 50
    assert shares(pool, 150)["new"] == 50
    clock[0] = T0 + 9.5  # step 10: full weight; nothing but time has passed
    assert shares(pool, 200)["new"] == 100
