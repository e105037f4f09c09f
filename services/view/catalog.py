"""A read-only view of every service: instances, config, and a change index to wait on.

What the gateway answers from (DNS and HTTP). It is the `Fleet` that `RegistrySync` feeds
(a snapshot, then events, as the balancer's pools are fed) plus the config log's latest
entry per service (`ConfigWatch`). Instances are as the registry publishes them, so the
operators' overrides (weight, drained, port, metadata) are already applied; slow start
and panic follow services/view/rules.py, as the balancer's do.

The change index (Consul's `X-Consul-Index`): starts at 1; every change that a reader
could see (an instance added, removed, or changed in anything but its load and last
heartbeat; a new config) takes the next value, as the global index and as its service's.
A re-applied snapshot that changes nothing moves nothing. `wait()` returns as soon as the
index passes the caller's, so a blocking query answers within milliseconds of a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.governor import ServiceConfig
from services.configlog import ConfigWatch
from services.lifecycle import Lifecycle
from services.view.rules import in_panic, warm_weight
from services.view.sync import RegistrySync

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from schemas.governor import ConfigApplied
    from schemas.registry import Instance
    from services.bus import Bus

__all__ = ["RegistryView", "ServiceState", "eligible"]


def eligible(instance: Instance, *, panic: bool = False) -> bool:
    """May take traffic: healthy (or the service is in panic), not drained, weight > 0."""
    return (instance.healthy or panic) and not instance.drained and instance.weight > 0


def _visible(i: Instance) -> tuple[object, ...]:
    """What a reader can see of an instance: not its load, nor when it last beat."""
    return (
        i.host,
        i.port,
        i.weight,
        i.zone,
        i.version,
        i.metadata,
        i.healthy,
        i.drained,
        i.ttl_s,
        i.registered_at,
    )


@dataclass(slots=True)
class ServiceState:
    """One service: its instances by id, its config, the index of its last change."""

    name: str
    config: ServiceConfig
    index: int
    instances: dict[str, Instance] = field(default_factory=dict)

    @property
    def panic(self) -> bool:
        healthy = sum(i.healthy for i in self.instances.values())
        return in_panic(healthy, len(self.instances), self.config.protect_threshold)

    def weight(self, instance: Instance, now: float | None = None) -> int:
        """The weight the balancer uses now: the registry's (overrides applied), warmed up."""
        wall = time.time() if now is None else now
        age = wall - instance.registered_at.timestamp()
        return warm_weight(instance.weight, age, self.config.warmup_s)[0]

    def serving(self, zone: str = "") -> tuple[list[Instance], bool]:
        """Who may take traffic (in `zone` only, if given), in instance-id order; panic."""
        panic = self.panic
        found = [
            i
            for i in self.instances.values()
            if eligible(i, panic=panic) and (not zone or i.zone == zone)
        ]
        found.sort(key=lambda i: i.instance_id)
        return found, panic


class RegistryView(Lifecycle):
    """Every service as the registry and the config log describe it; see the module doc."""

    def __init__(
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        *,
        timeout_s: float = 2.0,
        resync_s: float = 300.0,
        config_wait_s: float = 5.0,
        name: str = "view",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.clock = clock
        self.config_wait_s = config_wait_s
        self.services: dict[str, ServiceState] = {}
        self.configs: dict[str, ServiceConfig] = {}
        self.index = 1
        self.changed_at = clock()  # when the index last moved (monotonic)
        self._gone: dict[str, int] = {}  # service -> index of its removal
        self._moved = asyncio.Event()
        self.config = ConfigWatch(bus.nc, log, self._on_config)
        self.sync = RegistrySync(
            bus, self, log, timeout_s=timeout_s, resync_s=resync_s, name=f"{name}.sync"
        )

    @property
    def synced(self) -> asyncio.Event:
        """Set once the first complete snapshot of the registry is in."""
        return self.sync.synced

    @property
    def loaded(self) -> bool:
        """A snapshot of the registry is in (maybe from a registry still settling)."""
        return self.sync.snapshots > 0

    async def start(self) -> None:
        await self.enter(self.config)
        try:  # strategies and thresholds apply from the first answer
            await asyncio.wait_for(self.config.synced.wait(), self.config_wait_s)
        except TimeoutError:
            self.log.warning("view.config_not_loaded", waited_s=self.config_wait_s)
        await self.enter(self.sync)

    # -- reading -------------------------------------------------------------------------
    def service(self, name: str) -> ServiceState | None:
        return self.services.get(name)

    def service_index(self, name: str) -> int:
        """The index of the service's last change (or of its removal; 1 if never seen)."""
        state = self.services.get(name)
        if state is not None:
            return state.index
        return self._gone.get(name, 1)

    async def wait(self, after: int, timeout_s: float, service: str | None = None) -> int:
        """Wait until the index (global, or `service`'s) passes `after`, or the timeout.

        Returns the index then, which may still be `after` when the time ran out.
        """
        deadline = self.clock() + timeout_s

        def current() -> int:
            return self.index if service is None else self.service_index(service)

        while (now := current()) <= after:
            left = deadline - self.clock()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), left)
        return now

    # -- the Fleet, as RegistrySync feeds it ---------------------------------------------
    def upsert(self, service: str, instance: Instance) -> None:
        state = self.services.get(service)
        if state is None:
            config = self.configs.get(service) or ServiceConfig(service=service)
            state = self.services[service] = ServiceState(service, config, self.index)
            self._gone.pop(service, None)
        old = state.instances.get(instance.instance_id)
        state.instances[instance.instance_id] = instance
        if old is None or _visible(old) != _visible(instance):
            state.index = self._bump()

    def remove(self, service: str, instance_id: str) -> None:
        state = self.services.get(service)
        if state is None or state.instances.pop(instance_id, None) is None:
            return
        state.index = self._bump()
        if not state.instances:
            del self.services[service]
            self._gone[service] = state.index

    def known(self) -> dict[str, set[str]]:
        return {name: set(state.instances) for name, state in self.services.items()}

    async def _on_config(self, entry: ConfigApplied) -> None:
        self.configs[entry.service] = entry.config
        state = self.services.get(entry.service)
        if state is not None:
            state.config = entry.config
            state.index = self._bump()

    def _bump(self) -> int:
        self.index += 1
        self.changed_at = self.clock()
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()  # wakes every waiter; each checks its own index
        return self.index
