"""The registry's leader lease on a real nats-server: a write in flight across a step-down."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from waiting import until
from workers import run_registry

if TYPE_CHECKING:
    from natsserver import NatsServer


async def test_a_renewal_that_returns_after_the_step_down_gives_the_key_back(
    nats_server: NatsServer,
) -> None:
    """The write loop renews; before the answer is in, the replica steps down (its window
    ran out). The renewal still lands: the key is the replica's again, though it leads no
    more. It must not speak unseen and keep the key (no peer could win it, none would be
    named leader): it releases it, so the next writer wins at once."""
    async with run_registry(nats_server.url) as worker:
        role, replica = worker.role, worker.replica
        await until(lambda: role.publishes(replica.clock()), timeout=15)
        renewal: asyncio.Task[Any] = asyncio.create_task(replica._write())
        await asyncio.sleep(0)  # the renewal, built on the held revision, is on its way
        await replica._stepped(role.step_down("window over"))
        await renewal
        # whoever speaks answers the followers' pings and is named leader: nobody unseen
        assert not role.publishes(replica.clock()) or role.leads
