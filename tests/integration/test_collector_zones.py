"""The collector's start-up lookup of zones pages through the registry, as the balancer's
sync does: a service of more instances than one page holds is learnt whole.

InfluxDB is not needed here: the collector starts without it (it buffers and retries).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import msgspec
from conftest import Events, reg
from waiting import until
from workers import run_collector, run_registry

from schemas import subjects
from schemas.registry import Ack, InstancesQuery
from services.pages import PAGE

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from natsserver import NatsServer

    from services.bus import Bus


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_zones_of_a_service_larger_than_a_page_are_all_learnt(
    nats_server: NatsServer, bus: Bus, events: Events
) -> None:
    count = PAGE + 20
    async with run_registry(nats_server.url):
        for n in range(count):
            registration = reg(f"i{n:04d}", 8000, zone=f"z{n % 3}")
            await bus.request(subjects.register("big"), registration, Ack)
        await bus.request(subjects.register("small"), reg("s1", 9000, zone="eu"), Ack)
        await events.wait_for("registered", f"i{count - 1:04d}")
        asked: list[InstancesQuery] = []  # what the collector asks, seen on the server

        async def on_query(msg: Msg) -> None:
            asked.append(msgspec.json.decode(msg.data or b"{}", type=InstancesQuery))

        await bus.nc.subscribe(subjects.instances("big"), cb=on_query)
        await bus.confirm()
        async with run_collector(nats_server.url, closed_port_url()) as collector:
            zones = collector.zones
            await until(lambda: len(zones) == count + 1, timeout=10)
            assert zones[("big", "i0000")] == "z0"
            assert zones[("big", f"i{count - 1:04d}")] == f"z{(count - 1) % 3}"
            assert zones[("small", "s1")] == "eu"
        await until(lambda: len(asked) >= 2)
        assert [(q.after, q.limit) for q in asked] == [("", PAGE), (f"i{PAGE - 1:04d}", PAGE)]
