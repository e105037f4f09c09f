"""The one retry policy: exponential backoff with decorrelated jitter, capped.

Every reconnect and retry loop in Baton waits by it (the first NATS connection and nats-py's
own reconnects, every JetStream follower (services/stream: the config and ejection watches),
the governor's store, the balancer's snapshots, the collector's set-up and writes, the
SDK's registration and its resolves that found no balancer). Without jitter a fleet restarted
together retries in lockstep, and every retry lands on the recovering server at once.

    d(1) = uniform(base, 3 * base)      capped: d(n) = min(cap, d(n))
    d(n) = uniform(base, 3 * d(n - 1))

(Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015: "decorrelated
jitter"). Each wait is at least `base` (no hot loop against a dead server) and at most
`cap`; its expected growth is x2 an attempt, but two clients that start together drift
apart from the first wait on. A success calls `reset()`.

Pure logic: the random source, the clock and the sleep are passed in.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Backoff", "Retry"]


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """The policy's two numbers: the shortest wait and the longest, in seconds."""

    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {self.base_s} and {self.cap_s}")

    def next_delay(self, previous: float, uniform: Callable[[float, float], float]) -> float:
        """The wait after one that lasted `previous` (0 before the first)."""
        base = self.base_s
        return min(self.cap_s, uniform(base, 3 * max(base, previous)))

    def retry(
        self,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        deadline_s: float | None = None,
    ) -> Retry:
        """The state of one loop's retries; `deadline_s` from now bounds them."""
        return Retry(self, uniform=uniform, clock=clock, sleep=sleep, deadline_s=deadline_s)


class Retry:
    """One loop's attempts: how long to wait next, and whether the deadline allows it."""

    def __init__(
        self,
        policy: Backoff,
        *,
        uniform: Callable[[float, float], float],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[object]],
        deadline_s: float | None,
    ) -> None:
        self.policy = policy
        self.uniform = uniform
        self.clock = clock
        self._sleep = sleep
        self.deadline = None if deadline_s is None else clock() + deadline_s
        self.attempts = 0  # failures since the last reset
        self.last = 0.0  # the last wait handed out

    def next_delay(self) -> float:
        """Count a failure and return the wait before the next attempt."""
        self.attempts += 1
        self.last = self.policy.next_delay(self.last, self.uniform)
        return self.last

    def allows(self, delay: float) -> bool:
        """False if waiting `delay` would pass the deadline."""
        return self.deadline is None or self.clock() + delay <= self.deadline

    async def wait(self) -> bool:
        """Count a failure and sleep before the next attempt; False (at once) if the
        deadline would pass first."""
        delay = self.next_delay()
        if not self.allows(delay):
            return False
        await self._sleep(delay)
        return True

    def reset(self) -> None:
        """After a success: the next failure waits `base` to `3 * base` again."""
        self.attempts = 0
        self.last = 0.0
