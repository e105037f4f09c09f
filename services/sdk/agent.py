"""`ServiceAgent`: keeps one service instance registered for as long as it runs.

The registry holds a lease per instance; the agent renews it with heartbeats (as requests,
so a 404 tells it the registry forgot it) and registers again whenever the registry or the
NATS connection may have lost it. Nothing that happens after the first registration is
fatal: a service keeps serving while the control plane comes and goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import structlog

from schemas import subjects
from schemas.errors import explain
from schemas.registry import Ack, Deregistration, Heartbeat, Registration
from services.bus import Bus
from services.errors import BadRequest, BatonError, NotFound, RequestTimeout, Unavailable
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from nats.aio.client import Client
    from structlog.typing import FilteringBoundLogger

__all__ = ["Load", "ServiceAgent"]

# Errors that mean "the control plane is not reachable right now", never "you are wrong"
# (Unavailable: no registry answers, or the connection is down).
_TRANSIENT = (Unavailable, RequestTimeout, nats.errors.Error, OSError)
REGISTER_RETRY = Backoff(base_s=0.1, cap_s=5.0)  # while no registry answers at start


class Load(msgspec.Struct, frozen=True, kw_only=True):
    """Load an instance reports with each heartbeat; None leaves a value unreported."""

    cpu: float | None = None  # 0..1
    mem: float | None = None  # 0..1
    latency_ms: float | None = None  # the instance's own recent mean, >= 0


class ServiceAgent(Lifecycle):
    """Registers an instance of `service` on enter, heartbeats it, deregisters it on exit.

    ```
    async with ServiceAgent(nc, "orders", instance_id="orders-1", host=ip, port=8080) as agent:
        ...  # in each request handler: `with agent.track(): ...`
    ```

    Entering waits until the registry has acknowledged the registration, retrying while no
    registry answers (give `register_timeout_s` to bound that); a rejected registration
    raises from `services.errors` (BadRequest for a bad port, name or weight).
    """

    def __init__(  # noqa: PLR0913  # mirrors the Registration fields, all keyword-only
        self,
        nc: Client,
        service: str,
        *,
        instance_id: str,
        host: str,
        port: int,
        weight: int = 100,
        zone: str = "",
        version: str = "",
        metadata: Mapping[str, str] | None = None,
        ttl_s: float = 15.0,
        heartbeat_s: float | None = None,
        log: FilteringBoundLogger | None = None,
        load: Callable[[], Load] | None = None,
        request_timeout_s: float = 1.0,
        register_timeout_s: float | None = None,
    ) -> None:
        try:
            subjects.check_name(service)
            subjects.check_name(instance_id, "instance id")
        except subjects.InvalidNameError as exc:
            raise BadRequest(str(exc)) from None
        self.service = service
        self.registration = _checked(
            Registration(
                instance_id=instance_id,
                host=host,
                port=port,
                weight=weight,
                zone=zone,
                version=version,
                metadata=dict(metadata or {}),
                ttl_s=ttl_s,
            )
        )
        self._nc = nc
        self.log = (log or structlog.get_logger()).bind(service=service, instance_id=instance_id)
        self._bus = Bus(nc, self.log)
        self._heartbeat_s = heartbeat_s
        self._load_fn = load
        self._load = Load()
        self._timeout = request_timeout_s
        self._register_timeout = register_timeout_s
        self._inflight = 0
        self._latency_sum = 0.0  # of requests tracked since the last heartbeat
        self._latency_count = 0
        self._registrations = 0
        self._reconnects = 0

    # -- what a service uses -------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.registration.instance_id

    @property
    def inflight(self) -> int:
        """Requests in flight now, counted by `track()`; sent with every heartbeat."""
        return self._inflight

    @property
    def registrations(self) -> int:
        """How often the registry accepted this instance: 1 + re-registrations."""
        return self._registrations

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one request in flight for its duration (and time it for `latency_ms`).

        A plain context manager, so it works in sync and async handlers alike.
        """
        self._inflight += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._inflight -= 1
            self._latency_sum += (time.perf_counter() - start) * 1000
            self._latency_count += 1

    def report_load(
        self,
        *,
        cpu: float | None = None,
        mem: float | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Set the load sent with the next heartbeats (a `load` callable overrides it).

        Without a `latency_ms` here, the mean duration of the requests `track()` saw since
        the previous heartbeat is sent.
        """
        self._load = Load(cpu=cpu, mem=mem, latency_ms=latency_ms)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._reconnects = self._nc.stats["reconnects"]
        try:
            await self._register_until_acked()
        except BaseException:
            # Interrupted (say, cancelled by a Ctrl-C) after a request went out, the
            # registry may hold us already: withdraw, rather than leave a zombie for ttl_s.
            await self._deregister()
            raise
        self.spawn(self._heartbeat_loop(), f"agent.{self.instance_id}")

    async def stop(self) -> None:
        await self._deregister()

    # -- the protocol --------------------------------------------------------------------
    async def _register(self) -> Ack:
        ack = await self._bus.request(
            subjects.register(self.service), self.registration, Ack, timeout=self._timeout
        )
        self._registrations += 1
        self.log.info("agent.registered", registrations=self._registrations)
        return ack

    async def _register_until_acked(self) -> None:
        """Register, retrying while nothing answers (services/retry.py), so services may
        start first."""
        retry = REGISTER_RETRY.retry(deadline_s=self._register_timeout)
        while True:
            try:
                ack = await self._register()
            except _TRANSIENT as exc:
                delay = retry.next_delay()
                if not retry.allows(delay):
                    raise
                self.log.warning("agent.register_retry", attempt=retry.attempts, error=str(exc))
                await asyncio.sleep(delay)
            else:
                self._adopt(ack)
                return

    def _adopt(self, ack: Ack) -> None:
        # The registry may say how often it wants heartbeats; an explicit setting wins.
        if self._heartbeat_s is None and ack.heartbeat_s > 0:
            self._heartbeat_s = ack.heartbeat_s

    @property
    def heartbeat_s(self) -> float:
        return self._heartbeat_s or self.registration.ttl_s / 3

    def _heartbeat(self) -> Heartbeat:
        load = self._load_fn() if self._load_fn is not None else self._load
        latency = load.latency_ms
        if latency is None and self._latency_count:
            latency = self._latency_sum / self._latency_count
        self._latency_sum, self._latency_count = 0.0, 0
        # Clamped: a load value out of range would get the heartbeat rejected, and a
        # rejected heartbeat would let the lease lapse over a cosmetic mistake.
        return Heartbeat(
            instance_id=self.instance_id,
            inflight=max(0, self._inflight),
            cpu=_clamp(load.cpu, 1.0),
            mem=_clamp(load.mem, 1.0),
            latency_ms=_clamp(latency, None),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
            except Exception:  # a bug (say, in a `load` callable) must not end the lease
                self.log.exception("agent.heartbeat_failed")

    async def _beat(self) -> None:
        reconnects = self._nc.stats["reconnects"]
        try:
            if reconnects != self._reconnects:
                # The server may be a new one, and the registry may have lost us meanwhile.
                self.log.info("agent.reconnected", reconnects=reconnects)
                self._adopt(await self._register())
                self._reconnects = reconnects
                return
            subject = subjects.heartbeat(self.service)
            await self._bus.request(subject, self._heartbeat(), Ack, timeout=self._timeout)
        except NotFound:
            # The registry restarted or expired us: register again at once.
            self.log.info("agent.unknown_to_registry")
            await self._reregister()
        except _TRANSIENT as exc:
            self.log.warning("agent.heartbeat_unanswered", error=str(exc))
        except BatonError as exc:
            # not a traceback's matter: the reason says what the registry did not accept
            self.log.error("agent.heartbeat_rejected", code=exc.code, reason=exc.message)  # noqa: TRY400

    async def _reregister(self) -> None:
        try:
            self._adopt(await self._register())
        except _TRANSIENT as exc:
            self.log.warning("agent.register_unanswered", error=str(exc))

    async def _deregister(self) -> None:
        # Best effort with a short deadline: the lease expires by itself anyway.
        msg = Deregistration(instance_id=self.instance_id)
        try:
            await self._bus.request(
                subjects.deregister(self.service), msg, Ack, timeout=min(self._timeout, 0.5)
            )
        except (BatonError, *_TRANSIENT) as exc:
            self.log.warning("agent.deregister_failed", error=str(exc))
        else:
            self.log.info("agent.deregistered")


def _clamp(value: float | None, high: float | None) -> float | None:
    if value is None:
        return None
    value = max(0.0, float(value))
    return value if high is None else min(high, value)


_registration_decoder = msgspec.json.Decoder(Registration)


def _checked(reg: Registration) -> Registration:
    """Check the contract's constraints here, so a bad port fails at once, with a sentence.

    Struct constructors do not validate; a decode does.
    """
    raw = msgspec.json.encode(reg)
    try:
        return _registration_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(explain(exc, raw, "Registration")) from None
