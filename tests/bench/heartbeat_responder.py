"""The baseline of the replica bench: a bare nats-py responder that decodes each Heartbeat
and answers an Ack with msgspec, nothing more."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import msgspec
import nats

from schemas import subjects
from schemas.registry import Ack, Heartbeat

if TYPE_CHECKING:
    from nats.aio.msg import Msg


async def main(url: str) -> None:
    nc = await nats.connect(servers=url.split(","))
    decode = msgspec.json.Decoder(Heartbeat).decode
    encode = msgspec.json.Encoder().encode

    async def on_msg(msg: Msg) -> None:
        hb = decode(msg.data)
        await nc.publish(msg.reply, encode(Ack(instance_id=hb.instance_id)))

    await nc.subscribe(subjects.every(subjects.HEARTBEAT), cb=on_msg)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(os.environ["NATS_URL"]))
