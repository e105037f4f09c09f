"""services/stream/lease.py on a real nats-server with JetStream: who holds the key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services import logs
from services.stream.lease import Lease

if TYPE_CHECKING:
    from services.bus import Bus

BUCKET = "TEST_LEASE"
KEY = "leader"


async def open_lease(bus: Bus, lease_s: float = 3.0) -> Lease:
    lease = await Lease.open(bus, BUCKET, KEY, lease_s, logs.get_logger("test"))
    assert lease is not None, "the test server runs JetStream"
    return lease


async def test_one_writer_holds_the_key_and_a_rival_is_refused(bus: Bus) -> None:
    mine, rival = await open_lease(bus), await open_lease(bus)
    first = await mine.claim(b"mine", 1.0)
    assert first is not None
    assert await rival.claim(b"rival", 1.0) is None  # held: no second holder
    refused = await rival.renew(b"rival", first + 100, 1.0)  # not its revision
    assert (refused.revision, refused.refused) == (None, True)
    renewed = await mine.renew(b"mine", first, 1.0)
    assert renewed.revision is not None
    assert renewed.revision > first
    stale = await mine.renew(b"mine", first, 1.0)  # an older revision: taken meanwhile
    assert stale.refused


async def test_a_released_key_is_won_at_once_by_the_next_writer(bus: Bus) -> None:
    mine, rival = await open_lease(bus), await open_lease(bus)
    held = await mine.claim(b"mine", 1.0)
    assert held is not None
    await mine.release(held + 100, 1.0)  # not ours any more: nothing is deleted
    assert await rival.claim(b"rival", 1.0) is None
    await mine.release(held, 1.0)
    assert await rival.claim(b"rival", 1.0) is not None  # the deleted key, won back


async def test_the_buckets_lease_is_everyones(bus: Bus) -> None:
    first = await open_lease(bus, lease_s=3.0)
    later = await open_lease(bus, lease_s=5.0)
    assert (first.ttl, later.ttl) == (3.0, 3.0)  # the creator's length stands
    assert await later.mark("replica.abc", b"here", 1.0)


async def test_whoever_holds_the_key_can_be_read_back(bus: Bus) -> None:
    """A refused claim reads who holds the key (maybe the claimer itself: a write it gave
    up waiting for may have been stored)."""
    mine, rival = await open_lease(bus), await open_lease(bus)
    assert await rival.holder(1.0) is None  # nobody yet
    held = await mine.claim(b"mine", 1.0)
    assert held is not None
    assert await rival.holder(1.0) == (b"mine", held)
    await mine.release(held, 1.0)
    assert await rival.holder(1.0) is None  # deleted: nobody holds it
