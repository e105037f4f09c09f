"""The SDK against real workers (in-process) on a real nats-server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import pytest
from waiting import until

from schemas import subjects
from schemas.balancer import CallReport
from schemas.registry import Deregistration, Empty, Heartbeat, InstanceEvent, InstanceList
from services import logs
from services.balancer.worker import Balancer, BalancerSettings
from services.bus import Bus, connect
from services.config import BusSettings
from services.errors import (
    BadRequest,
    NoResponders,
    NotFound,
    RequestTimeout,
    Unavailable,
)
from services.registry.worker import Registry, RegistrySettings
from services.sdk import BalancerClient, Endpoint, ServiceAgent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nats.aio.client import Client
    from nats.aio.subscription import Subscription
    from natsserver import NatsServer

T = TypeVar("T")
SERVICE = "orders"
FAST = {"ttl_s": 1.0, "heartbeat_s": 0.2, "request_timeout_s": 0.5}


# -- helpers -------------------------------------------------------------------------------
# what a worker answers while it is still catching up: polled again, not a failure
CATCHING_UP = (NotFound, Unavailable, RequestTimeout)


async def registered_twice(a: ServiceAgent) -> None:
    """The agent has its second registration's answer. The registry announces an instance
    before it answers, so the event can reach a test before the reply reaches the agent."""

    async def twice() -> int | None:
        return a.registrations if a.registrations == 2 else None

    await until(twice, timeout=2, ignoring=CATCHING_UP)


async def next_matching(
    sub: Subscription, kind: type[T], match: Callable[[T], bool], timeout: float = 5.0
) -> T:
    """The next message on `sub` that decodes as `kind` and satisfies `match`."""
    decoder = msgspec.json.Decoder(kind)

    async def loop() -> T:
        while True:
            msg = await sub.next_msg(timeout=None)
            value = decoder.decode(msg.data)
            if match(value):
                return value

    return await asyncio.wait_for(loop(), timeout)


def event(kind: str, instance_id: str) -> Callable[[InstanceEvent], bool]:
    return lambda e: e.kind == kind and e.instance.instance_id == instance_id


def agent(nc: Client, instance_id: str = "orders-1", **kwargs: Any) -> ServiceAgent:
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 8080, **FAST, **kwargs}
    return ServiceAgent(nc, SERVICE, instance_id=instance_id, **options)


async def instances(nc: Client, service: str = SERVICE) -> InstanceList:
    bus = Bus(nc, logs.get_logger("test"))
    return await bus.request(subjects.instances(service), Empty(), InstanceList, timeout=0.5)


def bus_settings(server: NatsServer) -> BusSettings:
    return BusSettings(url=server.url, reconnect_wait_s=0.05, reconnect_max_s=0.5)


async def run_registry(server: NatsServer, ready: asyncio.Event, stop: asyncio.Event) -> None:
    log = logs.get_logger("registry")
    async with (
        connect(bus_settings(server), log, name="registry") as bus,
        Registry(bus, RegistrySettings(settle_s=0), log),
    ):
        ready.set()
        await stop.wait()


@pytest.fixture
async def registry(nats_server: NatsServer) -> AsyncIterator[None]:
    log = logs.get_logger("registry")
    async with (
        connect(bus_settings(nats_server), log, name="registry") as bus,
        Registry(bus, RegistrySettings(settle_s=0), log),
    ):
        yield


@pytest.fixture
async def balancer(nats_server: NatsServer, registry: None) -> AsyncIterator[None]:
    log = logs.get_logger("balancer")
    async with (
        connect(bus_settings(nats_server), log, name="balancer") as bus,
        Balancer(bus, BalancerSettings(), log),
    ):
        yield


# -- ServiceAgent --------------------------------------------------------------------------
@pytest.mark.usefixtures("registry")
async def test_agent_registers_reports_inflight_and_deregisters(nc: Client) -> None:
    events = await nc.subscribe(subjects.events(SERVICE))
    beats = await nc.subscribe(subjects.heartbeat(SERVICE))  # a copy of every heartbeat

    async with agent(nc, zone="eu-1", metadata={"max_inflight": "4"}) as a:
        registered = await next_matching(events, InstanceEvent, event("registered", "orders-1"))
        assert registered.instance.port == 8080
        assert registered.instance.zone == "eu-1"
        assert registered.instance.metadata == {"max_inflight": "4"}

        with a.track(), a.track():
            assert a.inflight == 2
            await next_matching(beats, Heartbeat, lambda hb: hb.inflight == 2)

            async def busy() -> int | None:
                (inst,) = (await instances(nc)).instances
                return inst.inflight if inst.inflight == 2 else None

            assert await until(busy, ignoring=CATCHING_UP) == 2
        assert a.inflight == 0
        hb = await next_matching(beats, Heartbeat, lambda hb: hb.inflight == 0)
        assert hb.latency_ms is not None  # the two tracked requests were timed

    await next_matching(events, InstanceEvent, event("deregistered", "orders-1"))
    with pytest.raises(NotFound):
        await instances(nc)


@pytest.mark.usefixtures("registry")
async def test_agent_sends_the_load_it_is_given(nc: Client) -> None:
    beats = await nc.subscribe(subjects.heartbeat(SERVICE))
    async with agent(nc) as a:
        a.report_load(cpu=0.5, mem=1.7, latency_ms=12.0)  # mem out of range: clamped, not lost
        hb = await next_matching(beats, Heartbeat, lambda hb: hb.cpu is not None)
    assert (hb.cpu, hb.mem, hb.latency_ms) == (0.5, 1.0, 12.0)


async def test_agent_rejects_a_bad_registration_before_sending_it(nc: Client) -> None:
    with pytest.raises(BadRequest, match=r"port must be 1\.\.65535, got 70000"):
        agent(nc, port=70000)
    with pytest.raises(BadRequest, match=r"instance id 'orders\.1' contains '\.'"):
        agent(nc, instance_id="orders.1")


async def test_agent_waits_for_a_registry_that_starts_later(
    nats_server: NatsServer, nc: Client
) -> None:
    attempts = await nc.subscribe(subjects.register(SERVICE))  # sees tries; never answers
    entering = asyncio.create_task(agent(nc, request_timeout_s=0.2).__aenter__())
    await attempts.next_msg(timeout=5)
    await attempts.next_msg(timeout=5)  # a retry: the first one went unanswered
    assert not entering.done()

    ready, stop = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(run_registry(nats_server, ready, stop))
    a = await asyncio.wait_for(entering, 10)
    assert a.registrations == 1
    await a.__aexit__(None, None, None)
    stop.set()
    await worker


async def test_agent_withdraws_a_registration_interrupted_in_flight(nc: Client) -> None:
    # The registry may accept a registration and announce it before its Ack arrives; an
    # agent cancelled in that moment (Ctrl-C) must not leave the instance listed.
    attempts = await nc.subscribe(subjects.register(SERVICE))  # takes it; never answers
    withdrawals = await nc.subscribe(subjects.deregister(SERVICE))
    entering = asyncio.create_task(agent(nc, request_timeout_s=5).__aenter__())
    await attempts.next_msg(timeout=5)
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    withdrawal = await next_matching(withdrawals, Deregistration, lambda _: True)
    assert withdrawal.instance_id == "orders-1"


async def test_agent_gives_up_after_register_timeout(nc: Client) -> None:
    with pytest.raises(NoResponders):
        async with agent(nc, register_timeout_s=0.3):
            pass


@pytest.mark.usefixtures("registry")
async def test_agent_registers_again_when_the_registry_forgets_it(nc: Client) -> None:
    events = await nc.subscribe(subjects.events(SERVICE))
    async with agent(nc) as a:
        await next_matching(events, InstanceEvent, event("registered", "orders-1"))
        # Behind the agent's back: its next heartbeat is answered 404.
        forget = Deregistration(instance_id="orders-1")
        await nc.request(subjects.deregister(SERVICE), msgspec.json.encode(forget), timeout=1)
        await next_matching(events, InstanceEvent, event("deregistered", "orders-1"))
        await next_matching(events, InstanceEvent, event("registered", "orders-1"), timeout=2)
        await registered_twice(a)


async def test_agent_is_back_within_a_heartbeat_after_a_registry_restart(
    nats_server: NatsServer, nc: Client
) -> None:
    events = await nc.subscribe(subjects.events(SERVICE))
    ready, stop = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(run_registry(nats_server, ready, stop))
    await ready.wait()
    async with agent(nc) as a:
        old = await next_matching(events, InstanceEvent, event("registered", "orders-1"))
        stop.set()
        await first

        ready, stop = asyncio.Event(), asyncio.Event()
        second = asyncio.create_task(run_registry(nats_server, ready, stop))
        new = await next_matching(events, InstanceEvent, event("registered", "orders-1"))
        assert new.epoch != old.epoch  # announced by the new registry
        await registered_twice(a)
    stop.set()
    await second


@pytest.mark.usefixtures("registry")
async def test_agent_registers_again_after_the_nats_server_restarts(
    nats_server: NatsServer, nc: Client
) -> None:
    async with agent(nc) as a:
        assert a.registrations == 1
        nats_server.restart()  # SIGKILL, then the same port

        async def reregistered() -> int | None:
            return a.registrations if a.registrations >= 2 else None

        await until(reregistered, timeout=10, ignoring=CATCHING_UP)

        async def healthy() -> bool | None:
            try:
                (inst,) = (await instances(nc)).instances
            except NoResponders:  # the registry has not resubscribed yet
                return None
            return True if inst.healthy and inst.instance_id == "orders-1" else None

        assert await until(healthy, timeout=10, ignoring=CATCHING_UP)


# -- BalancerClient ------------------------------------------------------------------------
async def resolvable(client: BalancerClient, service: str = SERVICE) -> Endpoint:
    """Wait until the balancer has heard of the service's instances."""
    return await until(lambda: client.resolve(service), ignoring=CATCHING_UP)


@pytest.mark.usefixtures("balancer")
async def test_call_reports_the_instance_and_whether_the_body_raised(nc: Client) -> None:
    reports = await nc.subscribe(subjects.report(SERVICE))
    client = BalancerClient(nc, batch_ms=0)  # each report alone, on balancer.v1.report
    async with agent(nc):
        await resolvable(client)
        async with client.call(SERVICE) as ep:
            assert (ep.instance_id, ep.host, ep.port) == ("orders-1", "127.0.0.1", 8080)
        ok = await next_matching(reports, CallReport, lambda r: r.pick == ep.pick)
        assert (ok.instance_id, ok.ok) == ("orders-1", True)
        assert ok.latency_ms >= 0

        with pytest.raises(ConnectionError):
            async with client.call(SERVICE) as failed:
                raise ConnectionError
        bad = await next_matching(reports, CallReport, lambda r: r.pick == failed.pick)
        assert (bad.instance_id, bad.ok) == ("orders-1", False)
        assert failed.pick != ep.pick


@pytest.mark.usefixtures("balancer")
async def test_resolve_errors_map_to_the_error_tree(nc: Client) -> None:
    client = BalancerClient(nc, batch_ms=0)  # each report alone, on balancer.v1.report
    with pytest.raises(NotFound):
        await client.resolve("nobody")
    with pytest.raises(BadRequest, match=r"contains '\.'"):
        await client.resolve("bad.name")
    async with agent(nc):
        await resolvable(client)
        with pytest.raises(BadRequest, match="unknown strategy"):
            await client.resolve(SERVICE, strategy="fastest")
        with pytest.raises(Unavailable) as unavailable:
            await client.resolve(SERVICE, exclude=["orders-1"])
        assert type(unavailable.value) is Unavailable  # a 503 from the balancer, not ours


async def test_resolve_without_a_balancer(nc: Client) -> None:
    with pytest.raises(NoResponders):
        await BalancerClient(nc).resolve(SERVICE)
    await nc.subscribe(subjects.resolve("silent"))  # subscribed, but never answers
    with pytest.raises(RequestTimeout):
        await BalancerClient(nc, timeout=0.2).resolve("silent")


@pytest.mark.usefixtures("balancer")
async def test_call_with_retry_moves_to_another_instance(nc: Client) -> None:
    reports = await nc.subscribe(subjects.report(SERVICE))
    client = BalancerClient(nc, batch_ms=0)  # each report alone, on balancer.v1.report
    async with agent(nc, "orders-1"), agent(nc, "orders-2", port=8081):

        async def both() -> bool | None:
            got = await client.resolve(SERVICE, exclude=["orders-1"])
            return True if got.instance_id == "orders-2" else None

        await resolvable(client)
        await until(both, ignoring=CATCHING_UP)
        seen: list[str] = []

        async def first_fails(ep: Endpoint) -> str:
            seen.append(ep.instance_id)
            if len(seen) == 1:
                raise ConnectionError(ep.instance_id)
            return ep.instance_id

        # consistent_hash: without the exclusion, the retry would get the same instance
        served = await client.call_with_retry(
            SERVICE,
            first_fails,
            retry_on=(ConnectionError,),
            strategy="consistent_hash",
            key="user-7",
        )
        assert seen == [seen[0], served]
        assert served != seen[0]  # the failed instance was excluded
        first = await next_matching(reports, CallReport, lambda _: True)
        second = await next_matching(reports, CallReport, lambda _: True)
        assert (first.instance_id, first.ok) == (seen[0], False)
        assert (second.instance_id, second.ok) == (served, True)

        async def always_fails(ep: Endpoint) -> str:
            raise ConnectionError(ep.instance_id)

        # Both fail; then no instance is left, and the last call's error is what surfaces.
        with pytest.raises(ConnectionError):
            await client.call_with_retry(SERVICE, always_fails, attempts=5)
