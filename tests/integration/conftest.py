from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from barrier import subscribed
from workers import run_balancer, run_governor, run_registry

from schemas import subjects
from schemas.registry import InstanceEvent, Registration
from services import logs
from services.bus import Bus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer
    from test_cli import Baton


@pytest.fixture
async def registry(nats_server: NatsServer) -> AsyncIterator[Any]:
    async with run_registry(nats_server.url) as worker:
        yield worker


@pytest.fixture
async def balancer(nats_server: NatsServer, registry: Any) -> AsyncIterator[Any]:
    async with run_balancer(nats_server.url) as worker:
        await asyncio.wait_for(worker.sync.synced.wait(), 5)
        yield worker


@pytest.fixture
async def governor(nats_server: NatsServer) -> AsyncIterator[Any]:
    async with run_governor(nats_server.url) as worker:
        yield worker


@pytest.fixture
def cli(nats_server: NatsServer) -> Baton:
    """`await cli("instances", "orders")` runs `baton instances orders` on this server."""
    from test_cli import baton  # noqa: PLC0415  # the CLI runner lives with its tests

    return lambda *args: baton(nats_server.url, *args)


@pytest.fixture
def bus(nc: Client) -> Bus:
    return Bus(nc, logs.get_logger("test"))


class Events:
    """Every registry event, in order, with a way to await the next one that matches."""

    def __init__(self) -> None:
        self.seen: list[InstanceEvent] = []
        self._new = asyncio.Condition()

    async def on_msg(self, msg: Any) -> None:
        event = msgspec.json.decode(msg.data, type=InstanceEvent)
        async with self._new:
            self.seen.append(event)
            self._new.notify_all()

    async def wait_for(self, kind: str, instance_id: str, timeout: float = 5.0) -> InstanceEvent:
        def find() -> InstanceEvent | None:
            for e in self.seen:
                if e.kind == kind and e.instance.instance_id == instance_id:
                    return e
            return None

        async with self._new:
            await asyncio.wait_for(self._new.wait_for(find), timeout)
        found = find()
        assert found is not None
        return found

    def kinds(self, instance_id: str) -> list[str]:
        return [e.kind for e in self.seen if e.instance.instance_id == instance_id]


@pytest.fixture
async def events(nc: Client) -> AsyncIterator[Events]:
    ev = Events()
    sub = await nc.subscribe(subjects.every(subjects.EVENTS), cb=ev.on_msg)
    await subscribed(nc)
    yield ev
    await sub.unsubscribe()


def reg(instance_id: str, port: int = 8000, **kw: Any) -> Registration:
    return Registration(instance_id=instance_id, host="127.0.0.1", port=port, **kw)
