"""A base for workers and agents: an async context manager that owns background tasks.

`start()` subscribes and `spawn()`s loops; leaving cancels the loops, newest first, and
then runs `stop()`. No task is left without an owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

__all__ = ["Lifecycle"]


class Lifecycle:
    _tasks: list[asyncio.Task[None]]

    def spawn(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(loop, name=name)
        # created on first use, so subclasses need not call super().__init__()
        self.__dict__.setdefault("_tasks", []).append(task)
        return task

    async def start(self) -> None:
        """Subscribe and spawn; override."""

    async def stop(self) -> None:
        """Release what `start` took, after the spawned tasks have ended; override."""

    async def cancel_tasks(self) -> None:
        tasks: list[asyncio.Task[None]] = self.__dict__.get("_tasks", [])
        while tasks:
            task = tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cancel_tasks()
        await self.stop()
