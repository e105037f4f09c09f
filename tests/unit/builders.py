"""Builders shared by the unit tests of the balancer's pure logic."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from schemas.registry import Instance
from services.balancer.pool import Pick, Pool

WALL = datetime.now(UTC)


def instance(
    iid: str = "a",
    *,
    weight: int = 100,
    zone: str = "",
    healthy: bool = True,
    drained: bool = False,
    inflight: int = 0,
    metadata: dict[str, str] | None = None,
) -> Instance:
    return Instance(
        instance_id=iid,
        host="10.0.0.1",
        port=8080,
        weight=weight,
        zone=zone,
        version="",
        metadata=metadata or {},
        healthy=healthy,
        drained=drained,
        inflight=inflight,
        registered_at=WALL,
        last_seen=WALL,
    )


def pool_of(
    *instances: Instance, strategy: str = "round_robin", seed: int = 7, threshold: float = 0.0
) -> Pool:
    pool = Pool("orders", strategy=strategy, rng=random.Random(seed))
    pool.protect_threshold = threshold
    for inst in instances:
        pool.upsert(inst)
    return pool


def pick(
    pool: Pool,
    strategy: str | None = None,
    *,
    key: str | None = None,
    zone: str | None = None,
    exclude: tuple[str, ...] = (),
    now: float = 100.0,
) -> Pick:
    return pool.pick(strategy=strategy, key=key, zone=zone, exclude=frozenset(exclude), now=now)
