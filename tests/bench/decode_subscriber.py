"""The baseline for heartbeat ingest: a bare nats-py subscriber that decodes each Heartbeat
with msgspec and nothing more. A heartbeat sent as a request is answered with an Ack, so
the sender knows every message before it on this connection has been processed.

    NATS_URL=... python tests/bench/decode_subscriber.py <subject prefix>
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

import msgspec
import nats

from schemas import subjects
from schemas.registry import Ack, Heartbeat

if TYPE_CHECKING:
    from nats.aio.msg import Msg


async def main(url: str, prefix: str) -> None:
    nc = await nats.connect(url)
    decode = msgspec.json.Decoder(Heartbeat).decode
    encode = msgspec.json.Encoder().encode

    async def on_msg(msg: Msg) -> None:
        hb = decode(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, encode(Ack(instance_id=hb.instance_id)))

    await nc.subscribe(subjects.every(prefix), cb=on_msg)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(os.environ["NATS_URL"], sys.argv[1]))
