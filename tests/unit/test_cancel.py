"""A worker's loops end when it stops, even a loop that loses its cancel.

Python 3.11's `asyncio.wait_for` returns its result instead of raising when a cancel lands
as the awaited call finishes; the loop then goes round again. The stand-in below loses
its first cancel the same way, deterministically.
"""

from __future__ import annotations

import asyncio

from services.lifecycle import Lifecycle, cancel_and_wait


async def _loses_one_cancel(rounds: list[int]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # as 3.11's wait_for does when its call finished meanwhile
        rounds.append(1)


async def test_a_loop_that_loses_its_cancel_still_ends() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_loses_one_cancel(rounds))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 10)
    assert task.cancelled()
    assert rounds == [1]  # it went round once more, then the second cancel ended it


async def test_a_lifecycle_closes_with_such_a_loop_spawned() -> None:
    class Worker(Lifecycle):
        async def start(self) -> None:
            self.task = self.spawn(_loses_one_cancel([]), "lossy")

    async with Worker() as worker:
        await asyncio.sleep(0)
    assert worker.task.cancelled()


async def test_a_finished_task_is_left_as_it_is() -> None:
    async def done() -> None:
        return None

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait(task)
    assert not task.cancelled()
