"""Record every message on some subjects as JSON lines, from wherever it runs.

    ip netns exec NS python tests/recorder.py OUT.jsonl 'registry.v1.events.>' ...

A partition test runs it on the cut-off side: a reader there sees what a replica that
lost its quorum or its lease says, if it says anything. It connects to NATS_URL,
reconnects forever, and writes `{"ready": true}` once its subscriptions are live.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import nats

if TYPE_CHECKING:
    from nats.aio.msg import Msg


async def main(out_path: str, subjects: list[str]) -> None:
    servers = os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(",")
    nc = await nats.connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    with open(out_path, "a", buffering=1) as out:  # noqa: PTH123, ASYNC230  # line-buffered log

        async def on_msg(msg: Msg) -> None:
            line = {"t": time.time(), "subject": msg.subject, "data": msg.data.decode()}
            out.write(json.dumps(line) + "\n")

        for subject in subjects:
            await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        await nc.flush()
        out.write(json.dumps({"ready": True, "t": time.time()}) + "\n")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
