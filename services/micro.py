"""Workers that NATS tools can see: the NATS services protocol (ADR-32) for every worker.

The bus keeps one `Endpoint` per subscription and counts on it beside the handler (plain
int attributes and two `perf_counter_ns` calls: nothing measurable on resolve's path).
`announce` answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`, each for all services, for
the worker's name and for its id, from those counts, as nats-py's `nats.micro` does, so
`nats micro ls`/`info`/`stats`, any ADR-32 client and `baton status` see every replica.

Names: `baton-<worker>` (baton-registry, baton-balancer, baton-governor, baton-kv,
baton-collector, baton-gateway); ids: a NUID per process; version: the installed package's.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.micro import Info, Ping, Stats
from services.natsclient import unique_id, unsubscribe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import msgspec

    from services.bus import Bus
    from services.endpoints import Endpoint
    from services.natsclient import Subscription

__all__ = ["Service", "announce", "package_version", "worker_name"]

_UNKNOWN_VERSION = "0.0.0"  # run from a source tree that was never installed


def package_version() -> str:
    """Baton's version as installed (SemVer, from pyproject), for the `version` field."""
    try:
        return importlib_metadata.version("baton")
    except importlib_metadata.PackageNotFoundError:
        return _UNKNOWN_VERSION


def worker_name(worker: str) -> str:
    """The ADR-32 name of a worker: `registry` -> `baton-registry`."""
    return subjects.check_name(f"baton-{worker}", "worker name")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Service:
    """What one worker process says about itself; the replies are built when asked."""

    def __init__(
        self,
        name: str,
        endpoints: list[Endpoint],
        *,
        version: str,
        description: str = "",
        metadata: dict[str, str] | None = None,
        worker_id: str | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.name = subjects.check_name(name, "worker name")
        self.id = worker_id or unique_id()
        self.version = version
        self.description = description
        self.metadata = dict(metadata or {})
        self.endpoints = endpoints  # the bus's list: endpoints added later show too
        self.started = _iso(wallclock())

    def ping(self) -> Ping:
        return Ping(name=self.name, id=self.id, version=self.version, metadata=self.metadata)

    def info(self) -> Info:
        return Info(
            name=self.name,
            id=self.id,
            version=self.version,
            metadata=self.metadata,
            description=self.description,
            endpoints=[endpoint.info() for endpoint in self.endpoints],
        )

    def stats(self) -> Stats:
        return Stats(
            name=self.name,
            id=self.id,
            version=self.version,
            metadata=self.metadata,
            started=self.started,
            endpoints=[endpoint.stats() for endpoint in self.endpoints],
        )


def process_metadata() -> dict[str, str]:
    """Where the replica runs, so an operator can find it (and the stack its child)."""
    return {"pid": str(os.getpid()), "host": socket.gethostname()}


@asynccontextmanager
async def announce(
    bus: Bus,
    worker: str,
    *,
    description: str = "",
    metadata: dict[str, str] | None = None,
) -> AsyncIterator[Service]:
    """Answer `$SRV.PING/INFO/STATS` for the worker on `bus` until the block ends.

    Enter it once the worker serves: a PING answered means the worker is ready (the stack
    and the tests wait for that). Leaving it unsubscribes first, so a draining worker is
    no longer announced.
    """
    service = Service(
        worker_name(worker),
        bus.endpoints,
        version=package_version(),
        description=description,
        metadata={**process_metadata(), **(metadata or {})},
    )
    build: dict[str, Callable[[], msgspec.Struct]] = {
        "PING": service.ping,
        "INFO": service.info,
        "STATS": service.stats,
    }
    subs: list[Subscription] = []
    try:
        for verb, make in build.items():
            for subject in subjects.srv_levels(verb, service.name, service.id):
                # one at a time: a start that fails half-way unsubscribes what it took
                subs.append(await bus.respond(subject, make))  # noqa: PERF401
        await bus.confirm()
        bus.log.info("micro.announced", name=service.name, id=service.id)
        yield service
    finally:
        for sub in subs:  # closed already: nothing left to answer on, nothing raised
            await unsubscribe(sub)
