"""The gateway leaves the balancers' ejected instances out, as real clients see it: dig and
dnspython over DNS, py-consul over the Consul API, Prometheus' HTTP discovery over HTTP.

Real nats-server, registry, governor, balancer and gateways; each ejection comes from
failed call reports, as in tests/integration/test_outliers.py.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
import dns.asyncresolver
import dns.resolver
import pytest
from test_gateway_dns import resolver
from test_outliers import SERVICE, configure, listing, outlier_events, report  # noqa: F401
from waiting import until
from workers import run_balancer, run_gateway

from schemas import subjects
from schemas.registry import Ack, Registration
from services.view.ejections import state_of

consul = pytest.importorskip(
    "consul", reason="py-consul is in the dev extra: pip install -e .[dev]"
)

if TYPE_CHECKING:
    from conftest import Events
    from natsserver import NatsServer
    from test_outliers import Outliers

    from schemas.balancer import OutlierState
    from services.bus import Bus
    from services.gateway import Gateway

DIG = shutil.which("dig")
HOSTS = {"a": "127.0.0.11", "b": "127.0.0.12", "c": "127.0.0.13", "d": "127.0.0.14"}


async def fleet(bus: Bus, events: Events, ids: list[str], **kw: Any) -> None:
    for n, iid in enumerate(ids):
        r = Registration(instance_id=iid, host=HOSTS[iid], port=9001 + n, ttl_s=60, **kw)
        await bus.request(subjects.register(SERVICE), r, Ack)
        await events.wait_for("registered", iid)


def gateway(url: str) -> Any:
    return run_gateway(url, dns_port=-1, http_port=-1)


async def started(gw: Gateway, ids: list[str]) -> Gateway:
    await asyncio.wait_for(gw.view.synced.wait(), 5)
    await until(lambda: set(ids) <= gw.view.known().get(SERVICE, set()), what="the fleet")
    return gw


async def addresses(gw: Gateway, name: str = f"{SERVICE}.service.baton") -> set[str]:
    """The A records dnspython gets (an empty set for NXDOMAIN)."""
    try:
        answer = await resolver(gw).resolve(name, "A")
    except dns.resolver.NXDOMAIN:
        return set()
    return {x.address for x in answer}


async def srv_ports(gw: Gateway) -> list[int]:
    answer = await resolver(gw).resolve(f"_{SERVICE}._tcp.service.baton", "SRV")
    return sorted(x.port for x in answer)


async def dig(gw: Gateway, *args: str) -> list[str]:
    assert DIG is not None
    proc = await asyncio.create_subprocess_exec(
        DIG, "@127.0.0.1", "-p", str(gw.dns_port), "+time=3", "+tries=1", "+short", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return sorted(out.decode().split())


def hosts(*ids: str) -> set[str]:
    return {HOSTS[i] for i in ids}


def client(gw: Gateway) -> Any:
    return consul.Consul(host="127.0.0.1", port=gw.http_port)


async def passing_ids(gw: Gateway) -> list[str]:
    _, nodes = await asyncio.to_thread(client(gw).health.service, SERVICE, passing=True)
    return sorted(n["Service"]["ID"] for n in nodes)


async def sd_health(gw: Gateway) -> dict[str, str]:
    url = f"http://127.0.0.1:{gw.http_port}/v1/prometheus/targets?service={SERVICE}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        groups = await resp.json()
    return {
        g["labels"]["__meta_baton_service_id"]: g["labels"]["__meta_baton_health"] for g in groups
    }


async def left_out_of_dns(gw: Gateway) -> None:
    """a is out of every record of every form (dnspython, dig); its own name answers."""
    assert await addresses(gw) == hosts("b", "c", "d")
    assert await srv_ports(gw) == [9002, 9003, 9004]
    assert await dig(gw, f"{SERVICE}.service.baton", "A") == sorted(hosts("b", "c", "d"))
    srv = await dig(gw, f"_{SERVICE}._tcp.service.baton", "SRV")
    assert "9001" not in srv
    assert "9002" in srv
    assert await dig(gw, f"blue.{SERVICE}.service.z1.baton", "A") == sorted(hosts("b", "c", "d"))
    assert await dig(gw, f"a.{SERVICE}.instance.baton", "A") == [HOSTS["a"]]


@pytest.mark.skipif(DIG is None, reason="dig missing: `just dns-tools` installs bind9-dnsutils")
@pytest.mark.usefixtures("governor")
async def test_ejected_instances_leave_dns_and_passing_and_a_late_gateway_knows(
    nats_server: NatsServer,
    bus: Bus,
    events: Events,
    balancer: Any,
    outlier_events: Outliers,  # noqa: F811
) -> None:
    ids = ["a", "b", "c", "d"]
    # long ejections (nothing returns mid-test); 25 % of 4: one ejected at most
    await configure(
        bus, [balancer], consecutive_failures=2, max_ejected_percent=25,
        interval_s=0.25, base_ejection_s=30, max_ejection_s=60,
    )  # fmt: skip
    async with gateway(nats_server.url) as gw:
        await fleet(bus, events, ids, metadata={"consul.tags": "blue"}, zone="z1")
        await started(gw, ids)
        assert await addresses(gw) == hosts(*ids)
        # a bad entry in the stream (another writer's bug) is counted and skipped
        await bus.nc.jetstream().publish(subjects.outlier_state("junk"), b"not json")
        await until(lambda: gw.view.outliers.bad == 1, what="the bad entry counted")
        index, _ = await asyncio.to_thread(client(gw).health.service, SERVICE)
        # a blocking query parked on the service, as Prometheus' Consul discovery does
        parked = asyncio.ensure_future(
            asyncio.to_thread(client(gw).health.service, SERVICE, index=index, wait="30s")
        )

        await report(bus, "a", ok=False, times=2)
        ejected = await outlier_events.wait("ejected", "a")
        woke, nodes = await asyncio.wait_for(parked, 10)  # woken by the ejection
        assert int(woke) > int(index)
        by_id = {n["Service"]["ID"]: n for n in nodes}
        assert sorted(by_id) == ids  # the health endpoint still shows it, critical
        (check,) = [c for c in by_id["a"]["Checks"] if c["Name"] == "baton:outlier"]
        assert check["CheckID"] == "baton:outlier:a"
        assert check["Status"] == "critical"
        assert ejected.until.isoformat(timespec="milliseconds") in check["Output"]
        assert ejected.reason in check["Output"]
        assert [c for c in by_id["b"]["Checks"] if c["Name"] == "baton:outlier"] == []

        await left_out_of_dns(gw)
        # Consul's clients: out of ?passing, still in the catalog (Consul's lists all)
        assert await passing_ids(gw) == ["b", "c", "d"]
        _, listed = await asyncio.to_thread(client(gw).catalog.service, SERVICE)
        assert sorted(s["ServiceID"] for s in listed) == ids
        assert await sd_health(gw) == {
            "a": "critical", "b": "passing", "c": "passing", "d": "passing"
        }  # fmt: skip

        # the cap: b fails as a did, but one of four is ejected already, so b keeps
        # serving (the balancer picks it, and says panic): the gateway answers it too
        await report(bus, "b", ok=False, times=2)

        async def held() -> bool:
            return (await listing(bus)).held == ["b"]

        await until(held, what="b held by the cap")
        assert await addresses(gw) == hosts("b", "c", "d")
        assert await passing_ids(gw) == ["b", "c", "d"]

        # a gateway started now knows the ejection from its first answer
        async with gateway(nats_server.url) as late:
            await asyncio.wait_for(late.view.synced.wait(), 5)
            assert late.view.services[SERVICE].ejected == {"a"}
            assert await addresses(late) == hosts("b", "c", "d")
            assert await passing_ids(late) == ["b", "c", "d"]

        # switched off, outlier ejection returns everyone at once: back in every answer
        index, _ = await asyncio.to_thread(client(gw).health.service, SERVICE, passing=True)
        parked = asyncio.ensure_future(
            asyncio.to_thread(
                client(gw).health.service, SERVICE, index=index, passing=True, wait="30s"
            )
        )
        await configure(bus, [balancer], enabled=False)
        _, nodes = await asyncio.wait_for(parked, 10)
        assert sorted(n["Service"]["ID"] for n in nodes) == ids
        assert await addresses(gw) == hosts(*ids)
        await outlier_events.wait("returned", "a")  # and the balancer stores the return


@pytest.mark.usefixtures("governor", "registry")
async def test_an_ejection_ends_at_its_until_with_no_balancer_left_to_store_it(
    nats_server: NatsServer,
    bus: Bus,
    events: Events,
    outlier_events: Outliers,  # noqa: F811
) -> None:
    ids = ["a", "b", "c"]
    async with AsyncExitStack() as stack, gateway(nats_server.url) as gw:
        alive = AsyncExitStack()
        balancer = await alive.enter_async_context(run_balancer(nats_server.url))
        stack.push_async_callback(alive.aclose)
        await asyncio.wait_for(balancer.sync.synced.wait(), 5)
        await configure(
            bus, [balancer], consecutive_failures=2, max_ejected_percent=50,
            interval_s=0.25, base_ejection_s=3, max_ejection_s=10,
        )  # fmt: skip
        await fleet(bus, events, ids)
        await started(gw, ids)
        await report(bus, "a", ok=False, times=2)
        ejected = await outlier_events.wait("ejected", "a")
        until_s = ejected.until.timestamp()
        await until(lambda: gw.view.services[SERVICE].ejected == {"a"}, what="a ejected")
        await alive.aclose()  # the balancer stops: nobody will store the return
        assert "a" in (await stored(bus)).ejected  # the record says ejected until its until

        index, _ = await asyncio.to_thread(client(gw).health.service, SERVICE, passing=True)
        parked = asyncio.ensure_future(
            asyncio.to_thread(
                client(gw).health.service, SERVICE, index=index, passing=True, wait="30s"
            )
        )
        # at its until the gateway answers it again, and the parked query wakes
        woke, nodes = await asyncio.wait_for(parked, 15)
        assert int(woke) > int(index)
        assert time.time() >= until_s
        assert sorted(n["Service"]["ID"] for n in nodes) == ids
        assert gw.view.services[SERVICE].ejected == set()
        assert await srv_ports(gw) == [9001, 9002, 9003]

        # a gateway started after the until: the record still says ejected; it is over
        assert "a" in (await stored(bus)).ejected
        after = await stack.enter_async_context(gateway(nats_server.url))
        await asyncio.wait_for(after.view.synced.wait(), 5)
        assert after.view.services[SERVICE].ejected == set()
        assert await srv_ports(after) == [9001, 9002, 9003]
        assert await passing_ids(after) == ids


async def stored(bus: Bus) -> OutlierState:
    """The service's ejection state as the balancers stored it last."""
    raw = await bus.nc.jetstream().get_last_msg(
        subjects.OUTLIER_STREAM, subjects.outlier_records(SERVICE)
    )
    assert raw.subject is not None
    return state_of(raw.subject, raw.data, raw.headers)[1]
