"""Run workers in-process for tests: each on its own NATS connection, as in production,
and announced on `$SRV.PING/INFO/STATS` as the runner announces them."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from services import logs, micro
from services.balancer import Balancer, BalancerSettings
from services.bus import connect
from services.collector import Collector, CollectorSettings
from services.config import BusSettings
from services.gateway import Gateway, GatewaySettings
from services.governor import Governor, GovernorSettings
from services.kv import KvSettings, KvWorker
from services.mesh.worker import Mesh, MeshSettings
from services.prober import Prober, ProberSettings
from services.registry import Registry, RegistrySettings
from services.runner import describe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "run_balancer",
    "run_collector",
    "run_gateway",
    "run_governor",
    "run_kv",
    "run_mesh",
    "run_prober",
    "run_registry",
]

FAST_REGISTRY = RegistrySettings(sweep_s=0.02, settle_s=0.0)


@asynccontextmanager
async def _run(url: str, name: str, factory: Any, settings: Any) -> AsyncIterator[Any]:
    log = logs.get_logger(name)
    dump: asyncio.TimerHandle | None = None
    try:
        async with AsyncExitStack() as stack:
            settings_bus = BusSettings(url=url, reconnect_wait_s=0.05, reconnect_max_s=0.5)
            bus = await stack.enter_async_context(connect(settings_bus, log, name=name))
            worker = await stack.enter_async_context(factory(bus, settings, log))
            async with micro.announce(bus, name, description=describe(factory)):
                yield worker
            # a stop that hangs fails the test by its timeout; these stacks say where
            dump = asyncio.get_running_loop().call_later(SLOW_STOP_S, _dump_tasks, name)
            await bus.drain()
    finally:
        if dump is not None:
            dump.cancel()


SLOW_STOP_S = 15.0  # drains are bounded at 5 s: a stop taking longer than this is stuck


def _dump_tasks(name: str) -> None:
    sys.stderr.write(f"--- {name} still stopping after {SLOW_STOP_S} s; its tasks:\n")
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=sys.stderr)


def run_registry(url: str, settings: RegistrySettings = FAST_REGISTRY) -> Any:
    return _run(url, "registry", Registry, settings)


def run_balancer(url: str, settings: BalancerSettings | None = None) -> Any:
    return _run(url, "balancer", Balancer, settings or BalancerSettings(resync_s=60))


def run_governor(url: str, settings: GovernorSettings | None = None) -> Any:
    return _run(url, "governor", Governor, settings or GovernorSettings(retry_s=0.1))


def run_kv(url: str, settings: KvSettings | None = None) -> Any:
    return _run(url, "kv", KvWorker, settings or KvSettings(retry_s=0.1))


def run_collector(url: str, influx_url: str, **settings: Any) -> Any:
    settings.setdefault("flush_s", 0.1)
    settings.setdefault("setup_retry_s", 0.2)
    return _run(url, "collector", Collector, CollectorSettings(url=influx_url, **settings))


def run_gateway(url: str, **settings: Any) -> Any:
    """A gateway; listeners off unless asked for (-1: on a port the OS picks)."""
    settings.setdefault("dns_port", 0)
    settings.setdefault("http_port", 0)
    settings.setdefault("config_wait_s", 2.0)
    return _run(url, "gateway", Gateway, GatewaySettings(**settings))


def run_prober(url: str, **settings: Any) -> Any:
    """A prober replica; announces itself often, so tests see replicas come and go fast."""
    settings.setdefault("heartbeat_s", 0.1)
    settings.setdefault("resync_s", 60.0)
    return _run(url, "prober", Prober, ProberSettings(**settings))


def run_mesh(url: str, **settings: Any) -> Any:
    """A mesh worker on an xDS port the OS picks (its `port` says which)."""
    settings.setdefault("xds_port", 0)
    settings.setdefault("config_wait_s", 2.0)
    settings.setdefault("grace_s", 0.0)
    return _run(url, "mesh", Mesh, MeshSettings(**settings))
