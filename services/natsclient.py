"""nats-py's `Client` with one defect of nats-py 2.16 mended (every Baton connection uses it),
and how a subscription is let go of.

With services/bus.py and services/stream/, the only code that touches nats-py: workers
and shared modules hold a `Subscription` from here, never the client.

Each PING queues a future that its PONG completes, in order. A `flush()` that times out or
whose task is cancelled (a drain cut short at shutdown, a subscription confirmed by a task
being cancelled) leaves its future cancelled in that queue; the PONG that answers it then
calls `set_result` on a done future, the InvalidStateError ends nats-py's read loop, and the
connection goes deaf: no message, reply or PONG is read until the ping timer calls it stale
(NATS_PING_INTERVAL_S x (NATS_MAX_OUTSTANDING_PINGS + 1)). Here that PONG just retires the
future nobody waits for.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.aio.client
import nats.errors
from nats.aio.subscription import Subscription
from nats.nuid import NUID

__all__ = ["Client", "Subscription", "drain_subscription", "unique_id", "unsubscribe"]


class Client(nats.aio.client.Client):
    async def _process_pong(self) -> None:
        pongs = self._pongs
        if pongs and pongs[0].done():  # a flush that gave up: nobody waits for this PONG
            pongs.pop(0)
            self._pongs_received += 1
            self._pings_outstanding = 0
            return
        await super()._process_pong()


DRAIN_S = 5.0  # a drain that has not finished by then (a stuck handler) is cut short


async def drain_subscription(sub: Subscription) -> None:
    """Stop `sub` taking messages, finishing those already received (at most DRAIN_S).

    A drain, not an unsubscribe: what the server sent before it took the UNSUB is still
    handled (a request in flight is answered). Drained already or the connection closed:
    either way the server has no interest left. While reconnecting nothing more can
    arrive, so it is only dropped: a drain then waits on a flush that a reconnect in the
    meantime never answers (nats-py forgets the PONGs it awaited).
    """
    if not sub._conn.is_connected:  # noqa: SLF001  # nats-py keeps its connection there
        await unsubscribe(sub)
        return
    try:
        async with asyncio.timeout(DRAIN_S):
            await sub.drain()  # type: ignore[no-untyped-call]  # untyped in nats-py
    except nats.errors.Error:
        pass
    except TimeoutError:
        await unsubscribe(sub)


async def unsubscribe(sub: Subscription) -> None:
    """Drop `sub` now; once this returns the server has let go."""
    # nats-py only queues the UNSUB: flush it
    conn = sub._conn  # noqa: SLF001  # nats-py keeps its connection there
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        await sub.unsubscribe()
        if conn.is_connected:
            await conn.flush(timeout=DRAIN_S)


def unique_id() -> str:
    """A NUID: 22 characters of [0-9A-Za-z], unique per call (a process's id)."""
    return NUID().next().decode()
