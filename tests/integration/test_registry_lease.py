"""The registry's leader lease on a real nats-server: a write in flight across a step-down."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from waiting import until
from workers import FAST_REGISTRY, run_registry

from services.registry.worker import RegistrySettings

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


async def test_a_claim_stored_after_its_writer_gave_up_is_taken_over_not_waited_out(
    nats_server: NatsServer,
) -> None:
    """The key names this replica, at a revision it does not know it holds (its claim was
    stored after the write timed out here; here: it stepped down without a release). The
    lease is 30 s: waiting for the key to expire would leave the fleet without a leader
    that long. It takes the key over instead, within a round."""
    settings = RegistrySettings(
        sweep_s=FAST_REGISTRY.sweep_s, settle_s=FAST_REGISTRY.settle_s, leader_lease_s=30.0
    )
    async with run_registry(nats_server.url, settings) as worker:
        role, replica = worker.role, worker.replica
        await until(lambda: role.publishes(replica.clock()), timeout=15)
        await replica._stepped(role.step_down("its answer was lost"))
        assert not role.leads
        await until(lambda: role.leads, timeout=15, what="leading again within half a lease")
        assert role.publishes(replica.clock())
