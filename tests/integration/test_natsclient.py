"""A flush given up (cancelled, or timed out) must not leave a connection deaf.

nats-py 2.16's read loop dies on the PONG that answers a cancelled flush, and the client
then reads nothing until its ping timer calls the link stale; every Baton connection (the
workers' Bus, the SDK's client) uses services.natsclient.Client, which retires that PONG.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from services import logs, sdk
from services.bus import connect
from services.config import BusSettings

if TYPE_CHECKING:
    import nats
    from nats.aio.client import Client
    from natsserver import NatsServer


async def cancel_a_flush_then_hear(nc: Client, other: Client) -> bytes:
    heard: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        heard.put_nowait(msg.data)

    await nc.subscribe("test.after", cb=on_msg)
    await nc.flush()
    flushing = asyncio.ensure_future(nc.flush())
    await asyncio.sleep(0)  # its PING is queued and its future waits for the PONG
    flushing.cancel()
    await other.flush()  # the PONG for the cancelled flush has had time to come back
    await nc.flush()
    await other.publish("test.after", b"still hearing")
    return await asyncio.wait_for(heard.get(), 5)  # deaf: nothing until the stale timer


async def test_the_sdk_client_hears_after_a_cancelled_flush(
    nats_server: NatsServer, nc: Client
) -> None:
    client = await sdk.connect(nats_server.url, ping_interval=60)  # the stale timer is far
    try:
        assert await cancel_a_flush_then_hear(client, nc) == b"still hearing"
        assert client._reading_task is not None
        assert not client._reading_task.done()  # its read loop lives on
    finally:
        await client.close()


async def test_a_workers_bus_hears_after_a_cancelled_flush(
    nats_server: NatsServer, nc: Client
) -> None:
    settings = BusSettings(url=nats_server.url, ping_interval_s=60)
    async with connect(settings, logs.get_logger("test"), name="test") as bus:
        assert await cancel_a_flush_then_hear(bus.nc, nc) == b"still hearing"
