"""The Consul agent's writes, carried out on Baton's registry subjects.

A Consul agent owns its services' checks; here the registry owns the lease and the
gateway only forwards:

    register               registry.v1.register (weight 0 while the check is critical)
    check pass/warn/fail   a heartbeat when the status stays; a registration (the same id,
    check update           new weight and `consul.status`) when it changes
    service deregister     registry.v1.deregister

So a TTL check's pass is a heartbeat, and a check nobody passes goes the way of a silent
NATS instance: unhealthy after its TTL, expired after twice that (the registry's sweep).
A pass after expiry registers the instance again, as Baton's SDK does on a 404.

The gateway remembers what it registered (`held`), to re-register with the same fields,
and it keeps alive the services registered without a check, as an agent keeps its own:
they go when the gateway goes. Another gateway, or this one after a restart, rebuilds a
registration from the registry's listing (services/gateway/http/consul_model.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from schemas import subjects
from schemas.registry import Ack, Deregistration, Heartbeat
from services.errors import BatonError, NotFound
from services.gateway.http.consul_model import CHECK_KEY, DEFAULT_TTL_S, registration_for
from services.gateway.http.consul_render import check_id_of, from_instance
from services.lifecycle import Lifecycle

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.gateway.http.consul_model import ConsulService, Status
    from services.view import RegistryView

__all__ = ["Agent", "Held"]

TICK_S: Final = 1.0
FORGET_S: Final = 3600.0  # a held service silent this long (expired long ago) is forgotten


@dataclass(slots=True)
class Held:
    svc: ConsulService
    status: Status
    output: str
    beat: float  # monotonic time of the last registration or heartbeat sent
    critical_since: float | None


class Agent(Lifecycle):
    def __init__(
        self,
        bus: Bus,
        view: RegistryView,
        log: FilteringBoundLogger,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.view = view
        self.log = log
        self.timeout_s = timeout_s
        self.clock = clock
        self.held: dict[str, Held] = {}  # by instance id (Consul's service ID)

    # -- lifecycle: a child of the gateway's, so its loop ends with the gateway --------
    async def start(self) -> None:
        self.spawn(self._keep(), "gateway.http.agent")

    # -- finding -------------------------------------------------------------------------
    def service_of(self, service_id: str) -> ConsulService:
        held = self.held.get(service_id)
        if held is not None:
            return held.svc
        for name, state in self.view.services.items():
            inst = state.instances.get(service_id)
            if inst is not None:
                return from_instance(name, inst)
        raise NotFound(f'Unknown service ID "{service_id}": register it first')

    def check_owner(self, check_id: str) -> ConsulService:
        """The service whose TTL check is `check_id` (Consul's `service:<id>` by default)."""
        for held in self.held.values():
            if held.svc.check is not None and held.svc.check.check_id == check_id:
                return held.svc
        for name, state in self.view.services.items():
            for inst in state.instances.values():
                if check_id_of(inst) == check_id and CHECK_KEY in inst.metadata:
                    return from_instance(name, inst)
        raise NotFound(
            f'Unknown check ID "{check_id}": a service\'s TTL check is "service:<service id>" '
            "unless it was registered with a CheckID"
        )

    # -- writes --------------------------------------------------------------------------
    async def register(self, svc: ConsulService) -> None:
        status: Status = svc.check.status if svc.check else "passing"
        await self._register(svc, status)
        now = self.clock()
        self.held[svc.instance_id] = Held(
            svc=svc,
            status=status,
            output=svc.check.notes if svc.check else "",
            beat=now,
            critical_since=now if status == "critical" else None,
        )
        self.log.info(
            "consul.registered",
            service=svc.service,
            instance=svc.instance_id,
            status=status,
            ttl_s=svc.check.ttl_s if svc.check else None,
        )

    async def update(self, svc: ConsulService, status: Status, output: str) -> None:
        """A TTL check's pass, warn, fail or update: a heartbeat, or a new registration."""
        held = self.held.get(svc.instance_id)
        current = held.status if held else (svc.check.status if svc.check else "passing")
        if status != current:
            await self._register(svc, status)
            self.log.info(
                "consul.check_changed",
                service=svc.service,
                instance=svc.instance_id,
                status=status,
                was=current,
            )
        else:
            await self._heartbeat(svc, status)
        now = self.clock()
        since = held.critical_since if held and current == "critical" else now
        self.held[svc.instance_id] = Held(
            svc=svc,
            status=status,
            output=output,
            beat=now,
            critical_since=since if status == "critical" else None,
        )

    async def deregister(self, svc: ConsulService) -> None:
        await self.bus.request(
            subjects.deregister(svc.service),
            Deregistration(instance_id=svc.instance_id),
            Ack,
            timeout=self.timeout_s,
        )
        self.held.pop(svc.instance_id, None)
        self.log.info("consul.deregistered", service=svc.service, instance=svc.instance_id)

    async def _register(self, svc: ConsulService, status: Status) -> None:
        await self.bus.request(
            subjects.register(svc.service),
            registration_for(svc, status),
            Ack,
            timeout=self.timeout_s,
        )

    async def _heartbeat(self, svc: ConsulService, status: Status) -> None:
        try:
            await self.bus.request(
                subjects.heartbeat(svc.service),
                Heartbeat(instance_id=svc.instance_id),
                Ack,
                timeout=self.timeout_s,
            )
        except NotFound:  # expired, or the registry restarted: register again, as the SDK
            await self._register(svc, status)

    # -- what an agent does by itself ----------------------------------------------------
    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for held in list(self.held.values()):
                try:
                    await self._keep_one(held)
                except BatonError as exc:
                    self.log.warning(
                        "consul.keep_failed", instance=held.svc.instance_id, error=exc.message
                    )
                except Exception:  # a bug must not end the keeping of every other service
                    self.log.exception("consul.keep_crashed", instance=held.svc.instance_id)

    async def _keep_one(self, held: Held) -> None:
        now = self.clock()
        svc = held.svc
        check = svc.check
        if check is None:  # no check: alive while this gateway is, as on a Consul agent
            if now - held.beat >= DEFAULT_TTL_S / 3:
                await self._heartbeat(svc, "passing")
                held.beat = now
            return
        after = check.deregister_after_s
        since = held.critical_since
        if after is not None and now - held.beat >= check.ttl_s + after:
            since = held.beat + check.ttl_s  # critical since its TTL ran out unpassed
        if after is not None and since is not None and now - since >= after:
            self.log.info(
                "consul.deregister_critical", instance=svc.instance_id, critical_s=now - since
            )
            await self.deregister(svc)
        elif now - held.beat > max(FORGET_S, 4 * check.ttl_s):
            del self.held[svc.instance_id]  # long expired in the registry
