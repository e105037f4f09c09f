"""The barrier before another connection publishes: the server has our subscriptions.

`await subscribed(nc)` returns once the server has every command `nc` sent so far, so a
subscription made before it is live for publishers on other connections. One flush is
not enough: nats-py's flush() writes its PING straight to the socket, ahead of a SUB
still in its write buffer, and the PONG can come back before the SUB reached the server
(a request sent then finds no responder: 503). The flusher empties the buffer while the
first PING is out; the second PING follows the SUB, so its PONG proves it. Bus.confirm
(services/bus.py) does the same for the workers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["subscribed"]


async def subscribed(nc: Client) -> None:
    """Return once the server has handled every command `nc` sent so far."""
    await nc.flush()
    await nc.flush()
