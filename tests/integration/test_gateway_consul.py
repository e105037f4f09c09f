"""The Consul subset over HTTP, through a real gateway: reads, blocking queries, writes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from httpgateway import Http, stack
from waiting import until
from workers import run_gateway, run_registry

from schemas import subjects
from services.gateway.http import AGENT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from conftest import Events
    from nats.aio.client import Client
    from natsserver import NatsServer

CONSUL_HEADERS = ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact")


@pytest.fixture
async def http(nats_server: NatsServer) -> AsyncIterator[Http]:
    async with stack(nats_server.url) as client:
        yield client


async def _health(http: Http, name: str, **params: Any) -> list[dict[str, Any]]:
    status, body, headers = await http.call("GET", f"/v1/health/service/{name}", params=params)
    assert status == 200, body
    assert int(headers["X-Consul-Index"]) >= 1
    return list(body)


def _status(entry: dict[str, Any]) -> dict[str, str]:
    return {c["CheckID"]: c["Status"] for c in entry["Checks"]}


async def _register(http: Http, body: dict[str, Any]) -> None:
    status, text, _ = await http.call("PUT", "/v1/agent/service/register", body)
    assert status == 200, text


async def _until_status(http: Http, name: str, instance: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        for entry in await _health(http, name):
            if entry["Service"]["ID"] == instance:
                found.update(entry)
                return _status(entry).get(f"service:{instance}") == status
        return False

    await until(check, timeout=10)
    return found


async def test_agent_self_and_leader_headers(http: Http) -> None:
    status, body, headers = await http.call("GET", "/v1/agent/self")
    assert status == 200
    assert body["Config"]["Datacenter"] == "baton"
    status, body, headers = await http.call("GET", "/v1/catalog/services", params={"stale": ""})
    assert (status, body) == (200, {})
    assert headers["X-Consul-KnownLeader"] == "true"
    assert headers["X-Consul-LastContact"] == "0"
    assert int(headers["X-Consul-Index"]) >= 1


async def test_register_check_lifecycle(http: Http) -> None:
    """Lowercase keys (py-consul's), a TTL check that starts critical, pass, warn, fail."""
    await _register(
        http,
        {
            "name": "web",
            "id": "web-1",
            "address": "127.0.0.1",
            "port": 8001,
            "tags": ["blue", "v2"],
            "meta": {"team": "a"},
            "checks": [{"ttl": "5s"}],
        },
    )
    entry = await _until_status(http, "web", "web-1", "critical")
    assert entry["Service"]["Tags"] == ["blue", "v2"]
    assert entry["Service"]["Meta"] == {"team": "a"}
    assert entry["Node"]["Address"] == "127.0.0.1"
    status, _, _ = await http.call("GET", "/v1/resolve/web")
    assert status == 503  # critical: weight 0, never picked
    assert await _health(http, "web", passing="") == []

    status, _, _ = await http.call(
        "PUT", "/v1/agent/check/pass/service:web-1", params={"note": "ok"}
    )
    assert status == 200
    await _until_status(http, "web", "web-1", "passing")
    status, endpoint, _ = await http.call("GET", "/v1/resolve/web")
    assert (status, endpoint["port"]) == (200, 8001)
    assert [e["Service"]["ID"] for e in await _health(http, "web", passing="1")] == ["web-1"]

    await http.call("PUT", "/v1/agent/check/warn/service:web-1")
    await _until_status(http, "web", "web-1", "warning")
    assert await _health(http, "web", passing="true") == []  # passing excludes warning
    assert (await http.call("GET", "/v1/resolve/web"))[0] == 200  # warning still serves

    status, _, _ = await http.call(
        "PUT", "/v1/agent/check/update/service:web-1", {"Status": "critical", "Output": "db down"}
    )
    assert status == 200
    await _until_status(http, "web", "web-1", "critical")
    status, body, _ = await http.call("GET", "/v1/agent/checks")
    assert body["service:web-1"]["Output"] == "db down"
    await http.call("PUT", "/v1/agent/check/pass/service:web-1")
    await _until_status(http, "web", "web-1", "passing")

    status, body, _ = await http.call("GET", "/v1/catalog/services")
    assert body == {"web": ["blue", "v2"]}
    status, body, _ = await http.call("GET", "/v1/catalog/service/web", params={"tag": "blue"})
    assert [(e["ServiceID"], e["ServicePort"]) for e in body] == [("web-1", 8001)]
    status, body, _ = await http.call("GET", "/v1/catalog/service/web", params={"tag": "red"})
    assert body == []
    status, body, _ = await http.call("GET", "/v1/health/service/nothing")
    assert (status, body) == (200, [])  # as Consul: an unknown service is an empty list

    status, _, _ = await http.call("PUT", "/v1/agent/service/deregister/web-1")
    assert status == 200

    async def gone() -> bool:
        return await _health(http, "web") == []

    await until(gone, timeout=10)


async def test_unknown_ids_and_bad_bodies_answer_sentences(http: Http) -> None:
    status, text, _ = await http.call("PUT", "/v1/agent/check/pass/service:nobody")
    assert status == 404
    assert 'Unknown check ID "service:nobody"' in text
    status, text, _ = await http.call("PUT", "/v1/agent/service/deregister/nobody")
    assert (status, text.strip()) == (404, 'Unknown service ID "nobody": register it first')
    status, text, _ = await http.call(
        "PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80, "Check": {"HTTP": "x"}}
    )
    assert status == 400
    assert "Check.Interval is required for an HTTP check" in text
    script = {"Name": "web", "Port": 80, "Check": {"Args": ["/bin/sh"], "Interval": "5s"}}
    status, text, _ = await http.call("PUT", "/v1/agent/service/register", script)
    assert status == 400
    assert "remote code execution" in text
    status, text, _ = await http.call("GET", "/v1/health/service/web", params={"wait": "10"})
    assert status == 400
    assert "wait '10' is not a duration" in text
    status, text, _ = await http.call("GET", "/v1/health/service/web", params={"filter": "x"})
    assert "filter expressions are not supported" in text


@pytest.mark.parametrize("path", ["/v1/txn", "/v1/session/create", "/v1/acl/tokens"])
async def test_unsupported_apis_answer_501_with_a_sentence(http: Http, path: str) -> None:
    status, text, _ = await http.call("GET", path)
    assert status == 501
    assert "is not supported: Baton has no" in text
    assert "catalog/services" in text  # and says what is served


async def test_drained_is_maintenance_and_native_instances_pass(http: Http, nc: Client) -> None:
    native = b'{"instance_id": "api-1", "host": "127.0.0.1", "port": 9001, "ttl_s": 5}'
    await nc.request(subjects.register("api"), native, timeout=5)
    entry = await _until_status(http, "api", "api-1", "passing")
    assert entry["Service"]["Weights"] == {"Passing": 100, "Warning": 100}
    change = b'{"actor": "ops", "instances": {"api-1": {"drained": true}}}'
    await nc.request(subjects.change("api"), change, timeout=5)

    async def maintenance() -> bool:
        entries = await _health(http, "api")
        return bool(entries) and _status(entries[0]).get("_service_maintenance:api-1") == "critical"

    await until(maintenance, timeout=10)
    assert await _health(http, "api", passing="") == []


async def test_blocking_queries(http: Http) -> None:
    _, _, headers = await http.call("GET", "/v1/health/service/web")
    index = int(headers["X-Consul-Index"])
    # no change: the query comes back at its wait, with the same index
    status, body, headers = await http.call(
        "GET", "/v1/health/service/web", params={"index": str(index), "wait": "200ms"}
    )
    assert (status, body, int(headers["X-Consul-Index"])) == (200, [], index)
    # a change wakes the query long before its wait
    waiting = asyncio.ensure_future(
        http.call("GET", "/v1/health/service/web", params={"index": str(index), "wait": "50s"})
    )
    await asyncio.sleep(0.05)  # a short wait for what must NOT happen: an early answer
    assert not waiting.done()
    await _register(
        http, {"Name": "web", "Port": 8001, "Check": {"TTL": "5s", "Status": "passing"}}
    )
    status, body, headers = await asyncio.wait_for(waiting, 10)
    assert int(headers["X-Consul-Index"]) > index
    assert [e["Service"]["ID"] for e in body] == ["web"]
    # the catalog's index grows too, and another service's change does not wake web's
    _, _, headers = await http.call("GET", "/v1/catalog/services")
    catalog = int(headers["X-Consul-Index"])
    _, _, headers = await http.call("GET", "/v1/health/service/web")
    web = int(headers["X-Consul-Index"])
    other = asyncio.ensure_future(
        http.call("GET", "/v1/health/service/web", params={"index": str(web), "wait": "300ms"})
    )
    await _register(http, {"Name": "api", "Port": 9000})
    _, _, headers = await http.call("GET", "/v1/catalog/services", params={"index": str(catalog)})
    assert int(headers["X-Consul-Index"]) > catalog
    _, body, headers = await other
    assert int(headers["X-Consul-Index"]) == web  # came back at its wait, unchanged
    # an index ahead of the gateway's (it restarted): answered at once, so clients reset
    status, _, headers = await asyncio.wait_for(
        http.call("GET", "/v1/health/service/web", params={"index": "999999", "wait": "5m"}), 5
    )
    assert int(headers["X-Consul-Index"]) < 999999


async def test_a_parked_blocking_query_answers_when_the_gateway_stops(
    nats_server: NatsServer,
) -> None:
    async with stack(nats_server.url) as http:
        _, _, headers = await http.call("GET", "/v1/catalog/services")
        index = headers["X-Consul-Index"]
        parked = asyncio.ensure_future(
            http.call("GET", "/v1/catalog/services", params={"index": index, "wait": "10m"})
        )
        await asyncio.sleep(0.05)  # a short wait for what must NOT happen: an early answer
        assert not parked.done()
        await http.gateway._runner.cleanup()  # the worker's stop: aiohttp drains handlers
        http.gateway._runner = None
        status, body, headers = await asyncio.wait_for(parked, 10)
        assert (status, body, headers["X-Consul-Index"]) == (200, {}, index)


async def test_garbage_and_oversized_bodies_are_refused_and_the_gateway_lives(
    http: Http,
) -> None:
    for raw in (b"\xff\xfe\x00garbage", b"[]", b'{"Name": 5}', b"null"):
        status, text, _ = await http.call("PUT", "/v1/agent/service/register", data=raw)
        assert status == 400, text
    status, text, _ = await http.call(
        "PUT", "/v1/agent/service/register", data=b'{"Name": "' + b"x" * 70_000 + b'"}'
    )
    assert status == 413
    assert "larger than 65536 bytes" in text
    status, _, _ = await http.call("GET", "/v1/agent/self")  # still serving
    assert status == 200


async def test_agent_listings_status_and_fail(http: Http) -> None:
    await _register(
        http,
        {"Name": "web", "ID": "web-1", "Port": 8001, "Check": {"TTL": "5s", "Status": "passing"}},
    )
    status, body, _ = await http.call("GET", "/v1/agent/services")
    assert status == 200
    assert (body["web-1"]["Service"], body["web-1"]["Port"]) == ("web", 8001)
    await _until_status(http, "web", "web-1", "passing")
    status, _, _ = await http.call(
        "PUT", "/v1/agent/check/fail/service:web-1", params={"note": "x"}
    )
    assert status == 200
    await _until_status(http, "web", "web-1", "critical")
    assert (await http.call("GET", "/v1/resolve/web"))[0] == 503  # failed: never picked
    status, leader, _ = await http.call("GET", "/v1/status/leader")
    assert (status, leader) == (200, "127.0.0.1:8300")
    status, peers, _ = await http.call("GET", "/v1/status/peers")
    assert (status, peers) == (200, ["127.0.0.1:8300"])


async def test_deregister_critical_service_after(http: Http, events: Events) -> None:
    """Consul's DeregisterCriticalServiceAfter, on the agent's clock (passed in)."""
    agent = http.gateway._runner.app[AGENT]
    now = [1000.0]
    agent.clock = lambda: now[0]
    await _register(
        http,
        {
            "Name": "web",
            "ID": "web-1",
            "Port": 8001,
            "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1m"},  # critical at once
        },
    )
    held = agent.held["web-1"]
    now[0] += 59
    await agent._keep_one(held)
    assert "web-1" in agent.held  # not yet a minute
    now[0] += 2
    await agent._keep_one(held)
    await events.wait_for("deregistered", "web-1")
    assert "web-1" not in agent.held


async def test_reads_are_503_until_the_registry_is_read(nats_server: NatsServer) -> None:
    """Without a registry, an empty list would tell Prometheus every target is gone."""
    async with run_gateway(nats_server.url, http_port=-1, config_wait_s=0) as gw:
        base = f"http://127.0.0.1:{gw.http_port}"
        async with aiohttp.ClientSession() as session:
            for path in (
                "/v1/catalog/services",
                "/v1/health/service/web",
                "/v1/prometheus/targets",
            ):
                async with session.get(base + path) as resp:
                    assert resp.status == 503, path
                    assert "has not read the registry yet" in await resp.text()
            async with run_registry(nats_server.url):

                async def loaded() -> bool:
                    async with session.get(base + "/v1/catalog/services") as resp:
                        return resp.status == 200

                await until(loaded, timeout=10)


async def test_two_gateways_share_the_checks_through_the_registry(
    nats_server: NatsServer, http: Http
) -> None:
    async with run_gateway(nats_server.url, http_port=-1) as other:
        await asyncio.wait_for(other.view.synced.wait(), 5)
        b = Http(http.session, f"http://127.0.0.1:{other.http_port}", other)
        await _register(http, {"Name": "web", "ID": "web-1", "Port": 8001, "Check": {"TTL": "5s"}})
        await _until_status(b, "web", "web-1", "critical")  # B renders A's registration
        status, text, _ = await b.call("PUT", "/v1/agent/check/pass/service:web-1")
        assert status == 200, text  # B knows the check from the registry's listing
        entry = await _until_status(http, "web", "web-1", "passing")  # and A sees it
        assert entry["Service"]["Port"] == 8001
        status, _, _ = await b.call("PUT", "/v1/agent/service/deregister/web-1")
        assert status == 200

        async def gone() -> bool:
            return await _health(http, "web") == []

        await until(gone, timeout=10)
