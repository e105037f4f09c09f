"""The baseline of the registration storm: a bare nats-py responder that decodes each
Registration and answers an Ack with msgspec, nothing more. Everything the registry does
beyond this (leases, events, replicas) is what Baton costs."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import msgspec
import nats

from schemas import subjects
from schemas.registry import Ack, Registration

if TYPE_CHECKING:
    from nats.aio.msg import Msg


async def main(url: str) -> None:
    nc = await nats.connect(servers=url.split(","))
    decode = msgspec.json.Decoder(Registration).decode
    encode = msgspec.json.Encoder().encode

    async def on_msg(msg: Msg) -> None:
        reg = decode(msg.data)
        await nc.publish(msg.reply, encode(Ack(instance_id=reg.instance_id, ttl_s=reg.ttl_s)))

    await nc.subscribe(subjects.every(subjects.REGISTER), cb=on_msg)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(os.environ["NATS_URL"]))
