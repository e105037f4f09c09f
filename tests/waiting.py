"""The one way tests wait: poll a condition until it holds, with a deadline.

`until(cond)` calls `cond()` (plain or async) until it returns something truthy and
returns that; past the deadline it fails the test, saying what was awaited. Prefer an
event or a subscription where the code offers one; poll only what lives elsewhere (in a
worker, another process, a server).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["until", "until_sync"]

T = TypeVar("T")


@overload
async def until(
    cond: Callable[[], Awaitable[T | None]],
    timeout: float = ...,
    *,
    interval: float = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    what: str = ...,
) -> T: ...


@overload
async def until(
    cond: Callable[[], T | None],
    timeout: float = ...,
    *,
    interval: float = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    what: str = ...,
) -> T: ...


async def until(
    cond: Callable[[], Any],
    timeout: float = 5.0,
    *,
    interval: float = 0.005,
    ignoring: tuple[type[BaseException], ...] = (),
    what: str = "",
) -> Any:
    """The first truthy value of `cond()`, polled every `interval` s for `timeout` s.

    `cond` may be async (a request to a worker), and may do blocking I/O if wrapped as
    `lambda: asyncio.to_thread(check)`. An exception in `ignoring` counts as "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    late = AssertionError(f"not within {timeout:g} s: {what or _name(cond)}")
    while True:
        try:
            value = cond()
            if inspect.isawaitable(value):
                async with asyncio.timeout_at(deadline):  # a call that hangs fails too
                    value = await value
        except ignoring:
            value = None
        except TimeoutError:
            if loop.time() >= deadline:
                raise late from None
            raise
        if value:
            return value
        if loop.time() > deadline:
            raise late
        await asyncio.sleep(interval)  # a poll interval, not a wait for something


def until_sync(cond: Callable[[], T], timeout: float = 5.0, *, interval: float = 0.005) -> T:
    """`until` for code outside an event loop (a server process starting)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {_name(cond)}")
        time.sleep(interval)  # a poll interval, not a wait for something


def _name(cond: object) -> str:
    name = getattr(cond, "__qualname__", repr(cond))
    try:
        return f"{name} ({inspect.getsourcelines(cond)[0][0].strip()})"  # type: ignore[arg-type]
    except (OSError, TypeError):
        return str(name)
