"""The one retry policy (services/retry.py): decorrelated jitter, bounded, pure."""

from __future__ import annotations

import asyncio
import random
import statistics

import pytest

from services.retry import Backoff

POLICY = Backoff(base_s=0.5, cap_s=5.0)


def lowest(low: float, _high: float) -> float:
    return low


def highest(_low: float, high: float) -> float:
    return high


def test_every_wait_is_between_base_and_cap() -> None:
    for seed in range(50):
        retry = POLICY.retry(uniform=random.Random(seed).uniform)
        waits = [retry.next_delay() for _ in range(40)]
        assert all(0.5 <= w <= 5.0 for w in waits)
        assert retry.attempts == 40


def test_the_bounds_follow_the_formula() -> None:
    # d(1) = uniform(base, 3 base); d(n) = uniform(base, 3 d(n-1)), capped
    retry = POLICY.retry(uniform=highest)
    assert [retry.next_delay() for _ in range(4)] == [1.5, 4.5, 5.0, 5.0]
    retry = POLICY.retry(uniform=lowest)
    assert [retry.next_delay() for _ in range(3)] == [0.5, 0.5, 0.5]  # never a hot loop


def test_it_grows_to_the_cap_on_average() -> None:
    retries = [POLICY.retry(uniform=random.Random(s).uniform) for s in range(200)]
    firsts = [r.next_delay() for r in retries]
    tenths = [[r.next_delay() for _ in range(9)][-1] for r in retries]
    assert 0.8 < statistics.mean(firsts) < 1.2  # uniform(0.5, 1.5): 1.0
    assert statistics.mean(tenths) > 2.5  # at the tenth, most are near the cap


def test_a_fleet_restarted_together_does_not_retry_in_lockstep() -> None:
    # 100 clients, each with its own random source, all failing at t = 0
    clients = [POLICY.retry(uniform=random.Random(n).uniform) for n in range(100)]
    at = [0.0] * len(clients)
    for _ in range(5):
        at = [t + c.next_delay() for t, c in zip(at, clients, strict=True)]
        # their fifth retries are spread over seconds, not stacked on one instant
    assert max(at) - min(at) > 5.0
    assert len({round(t, 2) for t in at}) > 90


def test_reset_starts_again_from_base() -> None:
    retry = POLICY.retry(uniform=highest)
    for _ in range(5):
        retry.next_delay()
    retry.reset()
    assert (retry.attempts, retry.next_delay()) == (0, 1.5)


def test_a_deadline_refuses_a_wait_that_would_pass_it() -> None:
    now = [100.0]
    retry = POLICY.retry(uniform=highest, clock=lambda: now[0], deadline_s=2.0)
    assert retry.allows(retry.next_delay())  # 1.5 s: within the 2 s
    now[0] += 1.5
    assert not retry.allows(retry.next_delay())  # 4.5 s more would pass it


async def test_wait_sleeps_the_delay_or_returns_false_at_the_deadline() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        await asyncio.sleep(0)

    retry = POLICY.retry(uniform=highest, sleep=sleep, clock=lambda: 0.0, deadline_s=3.0)
    assert await retry.wait()
    assert not await retry.wait()  # 4.5 s would pass the 3 s deadline: no sleep at all
    assert slept == [1.5]


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_a_policy_needs_0_lt_base_le_cap(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base_s <= cap_s"):
        Backoff(base_s=base, cap_s=cap)
