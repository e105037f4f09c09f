"""The demo's clients, and the statistics they keep for the live table.

Each client resolves through `BalancerClient.call` and makes a real HTTP GET, so the
balancer receives a CallReport for every call, as a real service's client would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from services.errors import BatonError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from services.demo.settings import DemoSettings
    from services.sdk import BalancerClient, Endpoint

__all__ = ["Stats", "Traffic", "Window"]


@dataclass
class Window:
    """What one instance's calls looked like over the last window."""

    calls: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass
class Stats:
    """Calls per instance as the clients saw them, kept for `window_s` seconds."""

    window_s: float
    calls: dict[str, deque[tuple[float, float, bool]]] = field(default_factory=dict)
    resolve_errors: int = 0
    total_calls: int = 0
    strategy: str = ""  # what the balancer said it used, in its latest answer

    def record(self, instance_id: str, latency_ms: float, ok: bool) -> None:
        self.calls.setdefault(instance_id, deque()).append((time.monotonic(), latency_ms, ok))
        self.total_calls += 1

    def window(self, instance_id: str) -> Window:
        calls = self.calls.get(instance_id)
        if not calls:
            return Window()
        horizon = time.monotonic() - self.window_s
        while calls and calls[0][0] < horizon:
            calls.popleft()
        latencies = sorted(ms for _, ms, _ in calls)
        if not latencies:
            return Window()
        return Window(
            calls=len(latencies),
            errors=sum(1 for _, _, ok in calls if not ok),
            p50_ms=_quantile(latencies, 0.50),
            p99_ms=_quantile(latencies, 0.99),
        )


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Traffic:
    """`clients` concurrent loops of resolve -> GET -> report, until `stop` is set."""

    def __init__(
        self,
        balancer: BalancerClient,
        settings: DemoSettings,
        stats: Stats,
        log: FilteringBoundLogger,
    ) -> None:
        self.balancer = balancer
        self.settings = settings
        self.stats = stats
        self.log = log

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as tg:
            for n in range(self.settings.clients):
                tg.create_task(self._client(n, session, stop), name=f"demo.client.{n}")

    async def _client(self, n: int, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        rng = random.Random(n)
        think_s = self.settings.think_ms / 1000
        while not stop.is_set():
            # a few hundred users, so consistent_hash has keys to spread and keep
            key = f"user-{rng.randrange(256)}"
            try:
                async with self.balancer.call(
                    self.settings.service, key=key, strategy=self.settings.per_request
                ) as endpoint:
                    self.stats.strategy = endpoint.strategy
                    await self._get(session, endpoint)
            except BatonError as exc:  # resolve failed: no instance yet, or no balancer
                self.stats.resolve_errors += 1
                self.log.warning("demo.resolve_failed", code=exc.code, reason=exc.message)
                think_s = max(think_s, 0.2)  # do not spin while the fleet is not there
            except (aiohttp.ClientError, TimeoutError):
                pass  # counted in the stats and reported to the balancer by call()
            if think_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.expovariate(1 / think_s))

    async def _get(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        start = time.perf_counter()
        ok = False
        try:
            url = f"http://{endpoint.host}:{endpoint.port}/"
            async with session.get(url) as response:
                await response.read()
                response.raise_for_status()
            ok = True
        finally:
            self.stats.record(endpoint.instance_id, (time.perf_counter() - start) * 1000, ok)
