"""How far this replica has followed the store, and the consistent reads waiting for it.

A consistent read (Consul's `?consistent`) asks the stream for its newest sequence, then
waits here until the follower has delivered (and the index applied) that record: the
follower delivers in stream order, so every record up to it is applied too. Pure: no
I/O, tested directly.
"""

from __future__ import annotations

import asyncio

__all__ = ["Applied"]


class Applied:
    def __init__(self) -> None:
        self.seq = 0  # the newest stream sequence followed (all before it applied too)
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def advance(self, seq: int) -> None:
        """The follower delivered the record at `seq`; wake the reads it satisfies."""
        if seq <= self.seq:
            return
        self.seq = seq
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiting:
            if target <= seq:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiting = still

    async def reach(self, seq: int, timeout_s: float) -> bool:
        """Whether `seq` was followed within `timeout_s` (at once if it already was)."""
        if seq <= self.seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (seq, future)
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
        return True

    def __len__(self) -> int:
        return len(self._waiting)
