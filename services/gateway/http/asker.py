"""Requests to the workers on one reply subscription, for the HTTP hot path.

nats-py's `request()` pays, per call, a random token from the OS (`token_hex`) and an
`asyncio.wait_for`; behind an HTTP request that is a tenth of the gateway's work. Here
a counter names each reply inside one wildcard inbox, a timer handle is the deadline,
and the reply's bytes are handed back as they came.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Final

import nats.errors

from services.errors import NoResponders, RequestTimeout

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["Asker"]

_STATUS: Final = "Status"
_NO_RESPONDERS: Final = "503"


class Asker:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._count = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox() + "."
        self._sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self.prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def ask(self, subject: str, payload: bytes, timeout: float) -> Msg:
        """The reply to `payload` on `subject`; NoResponders or RequestTimeout raised."""
        token = str(next(self._count))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self.nc.publish(subject, payload, reply=self.prefix + token)
            reply = await future
        except TimeoutError:
            raise RequestTimeout(f"no reply on {subject} within {timeout:g} s") from None
        except nats.errors.Error as exc:
            raise NoResponders(f"cannot send on {subject}: {exc}") from None
        finally:
            timer.cancel()
            self._waiting.pop(token, None)
        headers = reply.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS and not reply.data:
            raise NoResponders(f"nothing serves {subject}; is the worker running?")
        return reply


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
