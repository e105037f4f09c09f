"""The demo's instances: real HTTP servers of different speeds, each kept registered by a
`ServiceAgent`, so the balancer has something worth balancing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, Self

from aiohttp import web

from services.sdk import Load, ServiceAgent

if TYPE_CHECKING:
    from nats.aio.client import Client
    from structlog.typing import FilteringBoundLogger

    from services.demo.settings import DemoSettings

__all__ = ["Backend", "Fleet"]

# Mean latency (ms) and weight of the i-th instance, cycling: fast ones weigh more, so
# `weighted` differs visibly from `round_robin`.
SPEEDS_MS = (5.0, 10.0, 20.0, 40.0, 80.0)
WEIGHTS = (50, 40, 30, 20, 10)
HICCUP_INSTANCE = 1  # occasionally slow: a GC pause, a cold cache
HICCUP_SHARE, HICCUP_MS = 0.05, 300.0
FAILING_INSTANCE = 3  # answers some requests with a 500, so errors show in the table


class Backend:
    """One instance: an aiohttp server on a port the OS picks, and its agent."""

    def __init__(self, index: int, settings: DemoSettings) -> None:
        self.index = index
        self.instance_id = f"{settings.service}-{index + 1}"
        self.zone = ("zone-a", "zone-b")[index % 2]
        self.mean_ms = SPEEDS_MS[index % len(SPEEDS_MS)]
        self.weight = WEIGHTS[index % len(WEIGHTS)]
        self.hiccups = index % len(SPEEDS_MS) == HICCUP_INSTANCE
        self.error_rate = settings.error_rate if index == FAILING_INSTANCE else 0.0
        self.served = 0  # requests answered, ok or not
        self.port = 0
        self.agent: ServiceAgent | None = None
        self._rng = random.Random(index)  # reproducible latencies per instance

    @property
    def inflight(self) -> int:
        return self.agent.inflight if self.agent else 0

    def delay_ms(self) -> float:
        if self.hiccups and self._rng.random() < HICCUP_SHARE:
            return HICCUP_MS
        return self.mean_ms * self._rng.lognormvariate(0.0, 0.3)

    async def handle(self, _request: web.Request) -> web.Response:
        if self.agent is None:  # not registered yet: nobody should have found us
            return web.json_response({"error": "starting"}, status=503)
        with self.agent.track():
            delay = self.delay_ms()
            await asyncio.sleep(delay / 1000)
            self.served += 1
            if self._rng.random() < self.error_rate:
                return web.json_response({"error": "injected failure"}, status=500)
            return web.json_response({"instance_id": self.instance_id, "delay_ms": delay})


class Fleet:
    """Starts every backend's server and registers it; on exit deregisters, then closes."""

    def __init__(self, nc: Client, settings: DemoSettings, log: FilteringBoundLogger) -> None:
        self.nc = nc
        self.settings = settings
        self.log = log
        self.backends = [Backend(i, settings) for i in range(settings.instances)]
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        # Built on a local stack first: cancelled half-way (Ctrl-C while no registry
        # answers), what was started is closed again.
        async with contextlib.AsyncExitStack() as stack:
            for backend in self.backends:
                await self._serve(backend, stack)
            for backend in self.backends:
                backend.agent = await stack.enter_async_context(self._agent(backend))
                self.log.info("backend.registered", instance_id=backend.instance_id)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()  # agents deregister first, then servers close

    async def _serve(self, backend: Backend, stack: contextlib.AsyncExitStack) -> None:
        app = web.Application()
        app.router.add_get("/", backend.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)  # the OS picks a free port
        await site.start()
        backend.port = int(runner.addresses[0][1])

    def _agent(self, backend: Backend) -> ServiceAgent:
        return ServiceAgent(
            self.nc,
            self.settings.service,
            instance_id=backend.instance_id,
            host="127.0.0.1",
            port=backend.port,
            weight=backend.weight,
            zone=backend.zone,
            version="demo",
            metadata={
                "max_inflight": str(self.settings.max_inflight),
                "speed_ms": f"{backend.mean_ms:g}",
            },
            ttl_s=self.settings.ttl_s,
            log=self.log,
            load=lambda: self._load(backend),
        )

    def _load(self, backend: Backend) -> Load:
        """A simulated cpu and memory that follow the instance's work: the demo's backends
        share one process, so their own figures would all be the same."""
        busy = backend.agent.inflight / self.settings.max_inflight if backend.agent else 0.0
        slowness = min(1.0, backend.mean_ms / 100)
        cpu = min(1.0, 0.05 + 0.6 * busy + 0.2 * slowness + random.uniform(0, 0.05))
        mem = min(1.0, 0.2 + 0.3 * slowness + 0.1 * busy)
        return Load(cpu=round(cpu, 3), mem=round(mem, 3))
