"""The read model of the fleet: instances, config, ejections, a change index to wait on.

One copy per worker, and every reader of the fleet reads it (docs/readmodel.md): the
gateway answers from it (DNS and HTTP), the balancer's pools follow its changes. It is
the `Fleet` that `RegistrySync` feeds (a snapshot, then events) plus the config log's
latest entry per service (`ConfigWatch`) and the balancers' stored ejections. Instances
are as the registry publishes them, so the operators' overrides (weight, drained, port,
metadata) are already applied; slow start and panic follow services/view/rules.py, as
the balancer's do. The balancers' ejections come from the records they store
(services/view/ejections.py): an ejected instance takes no traffic here either, as if
drained, until its ejection ends (at its `until`, even if the return is never stored);
panic does not bring it back, as it does not in a pick.

The change index (Consul's `X-Consul-Index`): starts at 1; every change that a reader
could see (an instance added, removed, or changed in anything but its load and last
heartbeat; a new config; an instance ejected or back) takes the next value, as the
global index and as its service's.
A re-applied snapshot that changes nothing moves nothing. `wait()` returns as soon as the
index passes the caller's, so a blocking query answers within milliseconds of a change.

Subscribers (`subscribe`) are called at once, in order, with a `Change` for each of those,
and for each stored ejection record too (one that changes who is ejected moves the
index; one that does not, as the cap holding an outlier, does not). Who may take traffic
is services/view/eligibility.py's rule, the one every reader applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from schemas.governor import ServiceConfig
from services.configlog import ConfigWatch
from services.lifecycle import Lifecycle
from services.view.ejections import EMPTY, OutlierWatch, ejected, next_end
from services.view.eligibility import may_take_traffic
from services.view.rules import in_panic, warm_weight
from services.view.sync import RegistrySync

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from structlog.typing import FilteringBoundLogger

    from schemas.balancer import Ejection, OutlierState
    from schemas.governor import ConfigApplied
    from schemas.registry import Instance
    from services.bus import Bus

__all__ = ["Change", "RegistryView", "ServiceState", "eligible"]

ChangeKind = Literal["instance", "removed", "config", "ejections"]


@dataclass(frozen=True, slots=True)
class Change:
    """What moved in the read model, as subscribers are told it.

    `instance`: `instance_id` was added or changed (in anything but its load and last
    heartbeat); `removed`: it left (the service is gone with its last instance);
    `config`: a new config for `service`; `ejections`: a new ejection record of `service`
    was stored, or an ejection ended. `index` is the model's index after it.
    """

    kind: ChangeKind
    service: str
    index: int
    instance_id: str = ""


if TYPE_CHECKING:
    Listener: TypeAlias = Callable[[Change], None]  # a subscriber of the model


def eligible(instance: Instance, *, panic: bool = False, ejected: bool = False) -> bool:
    """May take traffic (services/view/eligibility.py) by the registry's marks."""
    return may_take_traffic(
        healthy=instance.healthy,
        drained=instance.drained,
        weight=instance.weight,
        ejected=ejected,
        panic=panic,
    )


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
        i.health,
        # a check's status shows (the console's why); its output alone changes every run
        tuple((c.check_id, c.status) for c in i.check_states),
    )


@dataclass(slots=True)
class ServiceState:
    """One service: its instances by id, its config, the index of its last change, and
    who of them the balancers ejected (in force now: RegistryView keeps it so)."""

    name: str
    config: ServiceConfig
    index: int
    instances: dict[str, Instance] = field(default_factory=dict)
    ejected: frozenset[str] = frozenset()
    outliers: OutlierState = EMPTY  # the stored ejection records

    def ejection(self, instance_id: str) -> Ejection | None:
        """Why and until when `instance_id` is ejected; None if it is not."""
        return self.outliers.ejected.get(instance_id) if instance_id in self.ejected else None

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
        """Who may take traffic (in `zone` only, if given), in instance-id order; panic.

        Not the ejected, even in panic: the balancer picks none of them either."""
        panic = self.panic
        out = self.ejected
        found = [
            i
            for i in self.instances.values()
            if eligible(i, panic=panic, ejected=i.instance_id in out)
            and (not zone or i.zone == zone)
        ]
        found.sort(key=lambda i: i.instance_id)
        return found, panic


class ViewSettings(Protocol):
    """What a worker's settings say of its view: the balancer's, gateway's and mesh's do."""

    @property
    def registry_timeout_s(self) -> float: ...
    @property
    def resync_s(self) -> float: ...
    @property
    def config_wait_s(self) -> float: ...


class RegistryView(Lifecycle):
    """Every service as the registry and the config log describe it; see the module doc."""

    @classmethod
    def for_worker(
        cls,
        bus: Bus,
        log: FilteringBoundLogger,
        settings: ViewSettings,
        *,
        name: str,
        wallclock: Callable[[], float] = time.time,
        prepare_outliers: Callable[[], Awaitable[None]] | None = None,
    ) -> RegistryView:
        """The view a worker keeps, timed by the worker's own settings."""
        return cls(
            bus,
            log,
            timeout_s=settings.registry_timeout_s,
            resync_s=settings.resync_s,
            config_wait_s=settings.config_wait_s,
            name=name,
            wallclock=wallclock,
            prepare_outliers=prepare_outliers,
        )

    def __init__(  # noqa: PLR0913  # its dependencies and clocks, passed in
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        *,
        timeout_s: float = 2.0,
        resync_s: float = 300.0,
        config_wait_s: float = 5.0,
        name: str = "view",
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        prepare_outliers: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.log = log
        self.clock = clock
        self.wallclock = wallclock  # ejections end at a Unix time the balancers stored
        self.config_wait_s = config_wait_s
        self.services: dict[str, ServiceState] = {}
        self.configs: dict[str, ServiceConfig] = {}
        self.index = 1
        self.changed_at = clock()  # when the index last moved (monotonic)
        self._gone: dict[str, int] = {}  # service -> index of its removal
        self._moved = asyncio.Event()
        self.outlier_states: dict[str, OutlierState] = {}  # as stored, by service
        self.outlier_seqs: dict[str, int] = {}  # the stream sequence of each
        self._ends = asyncio.Event()  # an ejection came: its end is one to wake for
        self._listeners: list[Listener] = []
        self.config = ConfigWatch(bus, log, self._on_config)
        # the balancer creates the ejection stream there; the gateway waits for it
        self.outliers = OutlierWatch(
            bus, log, self.take_outliers, prepare=prepare_outliers, timeout_s=timeout_s
        )
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
        await self.enter(self.outliers)
        # strategies, thresholds and the ejections in force apply from the first answer
        deadline = self.clock() + self.config_wait_s
        for event, synced in (
            ("view.config_not_loaded", self.config.synced),
            ("view.ejections_not_loaded", self.outliers.synced),
        ):
            try:
                await asyncio.wait_for(synced.wait(), max(0.0, deadline - self.clock()))
            except TimeoutError:
                self.log.warning(event, waited_s=self.config_wait_s)
        self.spawn(self._end_ejections(), "view.ejections")
        await self.enter(self.sync)

    # -- reading -------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every `Change` from now on, as it happens, in order;
        returns the function that ends the subscription. A listener must not block; one
        that raises is logged and kept (the next change reaches it again)."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def service(self, name: str) -> ServiceState | None:
        """The service as the model has it now (None if it has no instance): its
        instances, config and ejections. Kept up to date in place; read it, never write."""
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
            self._eject(state)  # no bump: adding its first instance bumps
        old = state.instances.get(instance.instance_id)
        state.instances[instance.instance_id] = instance
        if old is None or _visible(old) != _visible(instance):
            state.index = self._bump()
            self._tell("instance", service, instance.instance_id)

    def remove(self, service: str, instance_id: str) -> None:
        state = self.services.get(service)
        if state is None or state.instances.pop(instance_id, None) is None:
            return
        state.index = self._bump()
        if not state.instances:
            del self.services[service]
            self._gone[service] = state.index
        self._tell("removed", service, instance_id)

    def known(self) -> dict[str, set[str]]:
        return {name: set(state.instances) for name, state in self.services.items()}

    async def _on_config(self, entry: ConfigApplied) -> None:
        self.configs[entry.service] = entry.config
        state = self.services.get(entry.service)
        if state is not None:
            state.config = entry.config
            self._eject(state)  # outlier ejection may have been switched on or off
            state.index = self._bump()
        self._tell("config", entry.service)

    # -- ejections, as the balancers store them -----------------------------------------
    def take_outliers(self, service: str, outliers: OutlierState, seq: int) -> None:
        """A stored ejection record of `service` at stream sequence `seq`, as the watch
        delivers it or as a balancer stored it itself; older than the one held: ignored."""
        if seq <= self.outlier_seqs.get(service, 0):
            return  # delivered again (the ordered consumer restarted), or a replica's own
        self.outlier_seqs[service] = seq
        self.outlier_states[service] = outliers
        state = self.services.get(service)
        if state is not None and self._eject(state):
            state.index = self._bump()
        self._tell("ejections", service)
        self._ends.set()

    def _eject(self, state: ServiceState) -> bool:
        """Bring `state.ejected` to the stored records as of now; True if it changed."""
        state.outliers = self.outlier_states.get(state.name, EMPTY)
        now = ejected(state.outliers, self.wallclock(), enabled=state.config.outlier.enabled)
        if now == state.ejected:
            return False
        state.ejected = now
        return True

    async def _end_ejections(self) -> None:
        """Each ejection ends at its `until`, whether or not its return is ever stored."""
        while True:
            now = self.wallclock()
            for state in list(self.services.values()):
                if state.ejected and self._eject(state):
                    state.index = self._bump()
                    self._tell("ejections", state.name)
            wake = min((next_end(s, now) for s in self.outlier_states.values()), default=math.inf)
            self._ends.clear()
            # asyncio.timeout, not wait_for: see RegistrySync._loop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wake == math.inf else max(0.001, wake - now)):
                    await self._ends.wait()

    def _tell(self, kind: ChangeKind, service: str, instance_id: str = "") -> None:
        change = Change(kind, service, self.index, instance_id)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a reader's bug must not stop the model or the others
                self.log.exception("view.listener_failed", kind=kind, service=service)

    def _bump(self) -> int:
        self.index += 1
        self.changed_at = self.clock()
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()  # wakes every waiter; each checks its own index
        return self.index
