"""The baseline: a bare nats-py responder that decodes a ResolveRequest and answers a fixed
Endpoint with msgspec. Everything the balancer does beyond this is what Baton costs."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

import msgspec
import nats

from schemas.balancer import Endpoint, ResolveRequest

if TYPE_CHECKING:
    from nats.aio.msg import Msg


async def main(url: str, subject: str) -> None:
    nc = await nats.connect(url)
    decode = msgspec.json.Decoder(ResolveRequest).decode
    encode = msgspec.json.Encoder().encode
    endpoint = Endpoint(
        instance_id="i0", host="127.0.0.1", port=8000, zone="", metadata={}, strategy="weighted"
    )

    async def on_msg(msg: Msg) -> None:
        decode(msg.data or b"{}")
        await nc.publish(msg.reply, encode(endpoint))

    await nc.subscribe(subject, queue="echo", cb=on_msg)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(os.environ["NATS_URL"], sys.argv[1]))
