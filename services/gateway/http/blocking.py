"""Consul's blocking queries: `?index=N&wait=5m` waits until the data's index passes N.

Consul's rules (api-docs/features/blocking): `wait` defaults to 5 minutes and is capped
at 10; up to wait/16 of jitter is added so that many watchers do not all come back at
once; an answer without change is allowed (the index is then the same). An index ahead
of ours (the client last spoke to a gateway that had seen more, or to this one before it
restarted) is answered at once, so the client resets instead of hanging for the wait.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Final, Protocol

from services.errors import BadRequest
from services.gateway.http.params import parse_duration, parse_index

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_WAIT_S", "MAX_WAIT_S", "Waitable", "block", "blocking_params"]

DEFAULT_WAIT_S: Final = 300.0
MAX_WAIT_S: Final = 600.0


class Waitable(Protocol):
    index: int

    def service_index(self, name: str) -> int: ...

    async def wait(self, after: int, timeout_s: float, service: str | None = None) -> int: ...


def blocking_params(query: Mapping[str, str]) -> tuple[int | None, float]:
    """(index, wait seconds) of a query string; index None = answer at once."""
    raw_index = query.get("index")
    index = parse_index(raw_index) if raw_index else None
    wait = DEFAULT_WAIT_S
    if query.get("wait"):
        wait = parse_duration(query["wait"], "wait")
        if wait < 0:
            raise BadRequest(f"wait {query['wait']!r} must not be negative")
    return index, min(wait, MAX_WAIT_S)


def jittered(wait_s: float) -> float:
    return wait_s + random.uniform(0, wait_s / 16)  # noqa: S311  # spreading, not secrets


async def block(
    view: Waitable,
    index: int | None,
    wait_s: float,
    service: str | None,
    closing: asyncio.Event | None = None,
) -> int:
    """The index to answer with, once it passes `index`, the wait is over, or `closing`
    is set (the gateway stops: parked queries answer now rather than hold the drain)."""
    current = view.index if service is None else view.service_index(service)
    # no index (or 0): answer now; news since `index`: answer now; an index ahead of
    # anything this gateway has seen: answer now, so that the client resets
    if not index or current > index or index > view.index:
        return current
    if closing is None:
        return await view.wait(index, jittered(wait_s), service)
    if closing.is_set():
        return current
    waiting = asyncio.ensure_future(view.wait(index, jittered(wait_s), service))
    stopping = asyncio.ensure_future(closing.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    return view.index if service is None else view.service_index(service)
