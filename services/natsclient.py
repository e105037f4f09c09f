"""nats-py's `Client` with one defect of nats-py 2.16 mended (every Baton connection uses it).

Each PING queues a future that its PONG completes, in order. A `flush()` that times out or
whose task is cancelled (a drain cut short at shutdown, a subscription confirmed by a task
being cancelled) leaves its future cancelled in that queue; the PONG that answers it then
calls `set_result` on a done future, the InvalidStateError ends nats-py's read loop, and the
connection goes deaf: no message, reply or PONG is read until the ping timer calls it stale
(NATS_PING_INTERVAL_S x (NATS_MAX_OUTSTANDING_PINGS + 1)). Here that PONG just retires the
future nobody waits for.
"""

from __future__ import annotations

import nats.aio.client

__all__ = ["Client"]


class Client(nats.aio.client.Client):
    async def _process_pong(self) -> None:
        pongs = self._pongs
        if pongs and pongs[0].done():  # a flush that gave up: nobody waits for this PONG
            pongs.pop(0)
            self._pongs_received += 1
            self._pings_outstanding = 0
            return
        await super()._process_pong()
