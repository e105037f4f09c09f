"""A base for workers and agents: an async context manager that owns what it starts.

Everything a `start()` opens goes on one exit stack: children entered with `enter()`
(a config watch, a registry sync), loops `spawn()`ed, subscriptions made through
`owned(bus.serve)`, and any other `on_close()` callback. Leaving closes the stack newest
first (loops cancelled, subscriptions drained, children left) and then runs `stop()`.
A `start()` that raises half-way closes what it had opened before the error goes on,
so nothing it started keeps running or subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, ParamSpec, Self, TypeAlias, TypeVar

from services.natsclient import drain_subscription, unsubscribe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from contextlib import AbstractAsyncContextManager
    from typing import Any

    from services.natsclient import Subscription

__all__ = [
    "Lifecycle",
    "Offer",
    "Subscribe",
    "cancel_and_wait",
    "drain_subscription",
    "unsubscribe",
]

P = ParamSpec("P")
T = TypeVar("T")


RECANCEL_S = 0.5  # a task still running this long after its cancel is cancelled again


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended, whatever it swallows.

    Python 3.11's `asyncio.wait_for` loses a cancel that lands as the awaited call
    finishes (it returns the result instead; mended in 3.12), so a loop can go round
    once more and wait for its next round as if never cancelled: a worker's stop then
    hangs. Cancelling again until the task is done ends it anyway.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    with contextlib.suppress(asyncio.CancelledError):
        await task


# one subscription, made when called (say `functools.partial(bus.serve, ...)`)
Subscribe: TypeAlias = "Callable[[], Awaitable[Subscription]]"


class Offer:
    """Subscriptions a worker holds only while a condition does (what a role serves).

    `set(True)` makes those missing, one at a time and in order (one that fails leaves the
    earlier ones, and the next `set(True)` makes the rest); `set(False)` drops them all, so
    a request finds a worker that can answer it, or no responders at once.
    """

    def __init__(self, *subscribe: Subscribe) -> None:
        self._subscribe = subscribe
        self._subs: list[Subscription] = []

    async def set(self, on: bool) -> None:
        if on:
            for subscribe in self._subscribe[len(self._subs) :]:
                self._subs.append(await subscribe())
            return
        subs, self._subs = self._subs, []
        for sub in subs:
            await unsubscribe(sub)


class Lifecycle:
    def _exits(self) -> AsyncExitStack:
        # created on first use, so subclasses need not call super().__init__()
        stack: AsyncExitStack | None = self.__dict__.get("_exit_stack")
        if stack is None:
            stack = self.__dict__["_exit_stack"] = AsyncExitStack()
        return stack

    async def enter(self, child: AbstractAsyncContextManager[T]) -> T:
        """Enter `child` now; it is left when this one is (or when its start fails)."""
        return await self._exits().enter_async_context(child)

    def spawn(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `loop` as a task, cancelled (and awaited) when this one closes."""
        task = asyncio.create_task(loop, name=name)
        self._exits().push_async_callback(cancel_and_wait, task)
        return task

    def on_close(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Run `callback` when this one closes, before whatever was opened before it."""
        self._exits().push_async_callback(callback)

    def own(self, sub: Subscription, *, drain: bool = True) -> Subscription:
        """Drain `sub` when this one closes (or only unsubscribe: nothing to finish)."""
        self._exits().push_async_callback(drain_subscription if drain else unsubscribe, sub)
        return sub

    def owned(
        self, subscribe: Callable[P, Awaitable[Subscription]]
    ) -> Callable[P, Awaitable[Subscription]]:
        """`subscribe` (say `bus.serve`), with every subscription it makes `own`ed."""

        async def owned_subscribe(*args: P.args, **kwargs: P.kwargs) -> Subscription:
            return self.own(await subscribe(*args, **kwargs))

        return owned_subscribe

    async def start(self) -> None:
        """Subscribe, spawn and enter children; override."""

    async def stop(self) -> None:
        """Release what is not on the exit stack, after it has closed; override."""

    async def close(self) -> None:
        """Close the exit stack: newest first, each child's own errors raised after all ran."""
        stack = self.__dict__.pop("_exit_stack", None)
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()  # a start that fails half-way leaves nothing running
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.close()
        finally:
            await self.stop()
