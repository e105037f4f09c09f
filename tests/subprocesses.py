"""Child processes a test starts: never left running when the test ends, passed or not."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncio.subprocess import Process
    from collections.abc import AsyncIterator

__all__ = ["reaped"]


@asynccontextmanager
async def reaped(proc: Process) -> AsyncIterator[Process]:
    """`proc`, killed and waited for if it still runs when the block ends."""
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
