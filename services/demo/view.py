"""What the control plane says about the demo's service, for the table: each instance as
the registry lists it (its weight with the operators' overrides, drained, healthy) and the
service's configured strategy, read again at every refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.governor import ServiceConfig
from schemas.registry import Empty, InstanceList, InstancesQuery
from services.errors import BatonError

if TYPE_CHECKING:
    from schemas.registry import Instance
    from services.bus import Bus

__all__ = ["View"]


@dataclass
class View:
    bus: Bus
    service: str
    instances: dict[str, Instance] = field(default_factory=dict)
    config: ServiceConfig | None = None

    async def refresh(self) -> None:
        """Ask the registry and the governor again; keep what was known if one is down."""
        with contextlib.suppress(BatonError):
            listed = await self.bus.request(
                subjects.instances(self.service), InstancesQuery(), InstanceList, timeout=1
            )
            self.instances = {i.instance_id: i for i in listed.instances}
        with contextlib.suppress(BatonError):
            self.config = await self.bus.request(
                subjects.config(self.service), Empty(), ServiceConfig, timeout=1
            )

    async def run(self, stop: asyncio.Event, every_s: float) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    def weight(self, instance_id: str, registered: int) -> int:
        """The weight in effect: the operator's override, else what the instance registered."""
        found = self.instances.get(instance_id)
        return found.weight if found else registered

    def state(self, instance_id: str) -> str:
        """What keeps traffic off an instance: drained, unhealthy (later: ejected); "" if none."""
        found = self.instances.get(instance_id)
        if found is None:
            return ""
        marks = [*(["drained"] if found.drained else []), *([] if found.healthy else ["unhealthy"])]
        return ",".join(marks)
