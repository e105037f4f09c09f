"""Reading a service's instances from the registry a page at a time, as every reader does.

A page is `PAGE` instances (well under NATS's 1 MiB payload limit), in instance-id order;
`next_after` names where the next one starts, empty on the last page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas import subjects
from schemas.registry import InstanceList, InstancesQuery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.bus import Bus

__all__ = ["PAGE", "pages"]

PAGE = 500


async def pages(
    bus: Bus, service: str, *, timeout: float = 2.0, page: int = PAGE
) -> AsyncIterator[InstanceList]:
    """Every page of `service`'s instances; NotFound if it has none (or emptied meanwhile)."""
    after = ""
    while True:
        found = await bus.request(
            subjects.instances(service),
            InstancesQuery(after=after, limit=page),
            InstanceList,
            timeout=timeout,
        )
        yield found
        after = found.next_after
        if not after:
            return
