"""Requests to the workers on one reply subscription, for the HTTP hot path.

nats-py's `request()` pays, per call, a random token from the OS (`token_hex`) and an
`asyncio.wait_for`; behind an HTTP request that is a tenth of the gateway's work. Here
a counter names each reply inside one wildcard inbox, a timer handle is the deadline,
and the reply's bytes are handed back as they came. The Asker is a child of the
gateway's lifecycle: its subscription goes, and waiting requests are cancelled, when
the gateway stops.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Final, Protocol

from services.errors import NoResponders, RequestTimeout
from services.lifecycle import Lifecycle

if TYPE_CHECKING:
    from services.bus import Bus

__all__ = ["Asker", "Reply"]

_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"


class Reply(Protocol):
    """What the Asker hands back: a NATS message's subject, headers and bytes."""

    subject: str
    headers: dict[str, str] | None
    data: bytes


class Asker(Lifecycle):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.prefix = ""
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._count = itertools.count(1)

    async def start(self) -> None:
        self.prefix = self.bus.new_inbox() + "."
        self.own(await self.bus.subscribe(self.prefix + "*", self._on_reply), drain=False)
        self.on_close(self._cancel_waiting)

    async def _cancel_waiting(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    @property
    def waiting(self) -> int:
        """Requests awaiting their reply now (each is gone by its deadline)."""
        return len(self._waiting)

    async def _on_reply(self, msg: Reply) -> None:
        future = self._waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def ask(self, subject: str, payload: bytes, timeout: float) -> Reply:
        """The reply to `payload` on `subject`; NoResponders, Unavailable (cannot send)
        or RequestTimeout raised."""
        token = str(next(self._count))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.bus.send(subject, payload, reply=self.prefix + token)
            reply = await future
        except TimeoutError:
            raise RequestTimeout(f"no reply on {subject} within {timeout:g} s") from None
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        headers = reply.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS and not reply.data:
            raise NoResponders(f"nothing serves {subject}; is the worker running?")
        return reply


def _expire(future: asyncio.Future[Reply]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
