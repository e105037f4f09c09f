"""Real Consul clients' active checks against the gateway: py-consul (PyPI, not ours)
registers HTTP, TCP and gRPC checks and external services; Baton's prober runs them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import dns.asyncquery
import dns.message
import msgspec
import pytest
from grpc_health.v1 import health_pb2
from httpgateway import stack
from nodescript import node_script
from test_gateway_node_consul import node_consul
from test_prober import Target, grpc_health, serve_target
from waiting import until
from workers import run_prober

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from schemas.checks import CheckDefinition
from schemas.registry import Ack, Registration

consul = pytest.importorskip("consul", reason="py-consul is in the dev extra")
__all__ = ["node_consul"]  # the fixture that installs npm `consul`, shared with its test

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from httpgateway import Http
    from natsserver import NatsServer

    from services.bus import Bus


@contextlib.asynccontextmanager
async def baton(url: str) -> AsyncIterator[tuple[Http, Any]]:
    async with stack(url) as http, run_prober(url) as prober:
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        yield http, consul.Consul(host="127.0.0.1", port=http.gateway.http_port)


async def passing_ids(client: Any, service: str) -> list[str]:
    _, nodes = await asyncio.to_thread(client.health.service, service, passing=True)
    return sorted(n["Service"]["ID"] for n in nodes)


async def checks_of(client: Any, service: str) -> dict[str, dict[str, Any]]:
    _, checks = await asyncio.to_thread(client.health.checks, service)
    return {c["CheckID"]: c for c in checks}


async def test_py_consul_http_check_follows_the_service(nats_server: NatsServer) -> None:
    target = Target()
    path = "/actuator/health"  # Spring Boot's, as Spring Cloud Consul registers it
    async with baton(nats_server.url) as (http, client), serve_target(target, path) as port:
        url = f"http://127.0.0.1:{port}{path}"
        registered = await asyncio.to_thread(
            client.agent.service.register,
            "web",
            service_id="web-1",
            address="127.0.0.1",
            port=port,
            check=consul.Check.http(url, "200ms", timeout="1s"),
        )
        assert registered is True

        async def listed() -> bool:
            return await passing_ids(client, "web") == ["web-1"]

        await until(listed, 10, what="web-1 passing")
        check = (await checks_of(client, "web"))["service:web-1"]
        assert (check["Status"], check["Type"]) == ("passing", "http")
        assert "200" in check["Output"]
        _, agent_checks, _ = await http.call("GET", "/v1/agent/checks")
        assert agent_checks["service:web-1"]["Status"] == "passing"

        # a blocking query parked on the index wakes on the check's transition
        index, _ = await asyncio.to_thread(client.health.service, "web", passing=True)
        woken = asyncio.create_task(
            asyncio.to_thread(client.health.service, "web", index=index, wait="30s", passing=True)
        )
        target.code = 503
        new_index, nodes = await asyncio.wait_for(woken, 20)
        assert int(new_index) > int(index)
        assert nodes == []

        async def critical() -> dict[str, Any] | None:
            found = (await checks_of(client, "web")).get("service:web-1")
            return found if found is not None and found["Status"] == "critical" else None

        failed = await until(critical, 10, what="critical shown")
        assert "503" in failed["Output"]
        _, in_state = await asyncio.to_thread(client.health.state, "critical")
        assert "service:web-1" in {c["CheckID"] for c in in_state}
        target.code = 200
        await until(listed, 10, what="web-1 back")


async def test_py_consul_tcp_and_grpc_checks(nats_server: NatsServer) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    tcp_port = server.sockets[0].getsockname()[1]
    try:
        async with grpc_health() as (servicer, grpc_port), baton(nats_server.url) as (_, client):
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            await asyncio.to_thread(
                client.agent.service.register,
                "db",
                service_id="db-1",
                address="127.0.0.1",
                port=tcp_port,
                check=consul.Check.tcp("127.0.0.1", tcp_port, "200ms", timeout="1s"),
            )
            await asyncio.to_thread(
                client.agent.service.register,
                "orders",
                service_id="orders-1",
                address="127.0.0.1",
                port=grpc_port,
                check=consul.Check.grpc(f"127.0.0.1:{grpc_port}", "200ms", timeout="1s"),
            )

            async def both() -> bool:
                db, orders = await passing_ids(client, "db"), await passing_ids(client, "orders")
                return db == ["db-1"] and orders == ["orders-1"]

            await until(both, 10, what="db and orders passing")
            await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

            async def orders_out() -> bool:
                return await passing_ids(client, "orders") == []

            await until(orders_out, 10, what="orders out once NOT_SERVING")
            grpc_check = (await checks_of(client, "orders"))["service:orders-1"]
            assert "NOT_SERVING" in grpc_check["Output"]
            await servicer.set("", health_pb2.HealthCheckResponse.SERVING)

            async def orders_back() -> bool:
                return await passing_ids(client, "orders") == ["orders-1"]

            await until(orders_back, 10, what="orders back once SERVING")
    finally:
        server.close()


async def test_an_external_service_registered_in_the_catalog_is_probed(
    nats_server: NatsServer,
) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with baton(nats_server.url) as (_http, client):
            done = await asyncio.to_thread(
                client.catalog.register,
                "legacy-db-node",
                "127.0.0.1",
                service={"Service": "legacy", "ID": "legacy-1", "Port": port},
                check={
                    "CheckID": "legacy-tcp",
                    "Name": "legacy tcp",
                    "ServiceID": "legacy-1",
                    "Definition": {"TCP": f"127.0.0.1:{port}", "Interval": "200ms"},
                },
                node_meta={"external-node": "true"},
            )
            assert done is True

            async def passing() -> bool:
                return await passing_ids(client, "legacy") == ["legacy-1"]

            await until(passing, 10, what="the external service passing")
            assert (await checks_of(client, "legacy"))["legacy-tcp"]["Type"] == "tcp"
            gone = await asyncio.to_thread(
                client.catalog.deregister, "legacy-db-node", service_id="legacy-1"
            )
            assert gone is True

            async def removed() -> bool:
                _, nodes = await asyncio.to_thread(client.health.service, "legacy")
                return not nodes

            await until(removed, 10, what="the external service removed")
    finally:
        server.close()


async def _srv_ports(gw: Any, name: str) -> set[int]:
    query = dns.message.make_query(name, "SRV")
    answer = await dns.asyncquery.udp(query, "127.0.0.1", port=gw.dns_port, timeout=5)
    return {record.port for rrset in answer.answer for record in rrset}


async def test_a_503_leaves_resolve_dns_and_passing_and_returns_after_successes(
    nats_server: NatsServer, bus: Bus
) -> None:
    target = Target()
    async with (
        stack(nats_server.url, dns_port=-1) as http,
        run_prober(nats_server.url) as prober,
        serve_target(target) as port,
    ):
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
        url = f"http://127.0.0.1:{port}/health"
        http_check = msgspec.convert(
            {
                "check_id": "health",
                "kind": "http",
                "target": url,
                "interval_s": 0.2,
                "success_before_passing": 2,
            },
            CheckDefinition,
        )
        web1 = Registration(instance_id="web-1", host="127.0.0.1", port=port, checks=[http_check])
        web2 = Registration(instance_id="web-2", host="127.0.0.1", port=port + 1, ttl_s=3600)
        for registration in (web1, web2):
            await bus.request(subjects.register("web"), registration, Ack)

        async def where() -> tuple[bool, bool, bool]:
            picks = set()
            for _ in range(12):
                picks.add(
                    (await bus.request(subjects.resolve("web"), ResolveRequest(), Endpoint)).port
                )
            in_dns = port in await _srv_ports(http.gateway, "web.service.baton")
            in_consul = "web-1" in await passing_ids(client, "web")
            return port in picks, in_dns, in_consul

        async def everywhere() -> bool:
            return await where() == (True, True, True)

        async def nowhere() -> bool:
            return await where() == (False, False, False)

        await until(everywhere, 10, what="web-1 in resolve, DNS and ?passing")
        target.code = 503
        await until(nowhere, 10, what="web-1 out of resolve, DNS and ?passing")
        hits = target.hits
        target.code = 200
        await until(everywhere, 10, what="web-1 back everywhere")
        assert target.hits - hits >= 2  # two successes before passing


async def test_node_consul_registers_an_http_check(
    nats_server: NatsServer, node_consul: Path
) -> None:
    target = Target()
    async with (
        baton(nats_server.url) as (http, _client),
        serve_target(target) as port,
        node_script(
            "consul_http_check.js",
            node_consul,
            str(http.gateway.http_port),
            "web",
            "web-node",
            str(port),
            f"http://127.0.0.1:{port}/health",
        ) as script,
    ):
        await script.line(lambda seen: seen.get("passing") == ["web-node"], 20)
        target.code = 503
        await script.line(lambda seen: seen.get("passing") == [], 20)
        target.code = 200
        await script.line(lambda seen: seen.get("passing") == ["web-node"], 20)
