"""Baton's API over HTTP, through a real gateway in front of real workers."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from barrier import subscribed
from httpgateway import Http, stack
from waiting import until
from workers import run_gateway

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER
from services.errors import StartupError
from services.gateway.http import ERRORS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from natsserver import NatsServer

WEB = {"instance_id": "web-1", "host": "127.0.0.1", "port": 8001, "zone": "z1", "ttl_s": 5}


@pytest.fixture
async def http(nats_server: NatsServer) -> AsyncIterator[Http]:
    async with stack(nats_server.url) as client:
        yield client


async def _register(http: Http, service: str, **fields: Any) -> None:
    status, body, _ = await http.call("POST", f"/v1/register/{service}", {**WEB, **fields})
    assert status == 200, body
    assert body["instance_id"] == fields.get("instance_id", "web-1")


async def _resolvable(http: Http, service: str, instance_id: str) -> None:
    async def check() -> bool:
        status, body, _ = await http.call("GET", f"/v1/resolve/{service}")
        return status == 200 and body["instance_id"] == instance_id

    await until(check, timeout=10)


async def test_register_resolve_report_deregister(http: Http) -> None:
    await _register(http, "web")
    await _resolvable(http, "web", "web-1")
    status, endpoint, _ = await http.call("GET", "/v1/resolve/web")
    assert (endpoint["host"], endpoint["port"], endpoint["zone"]) == ("127.0.0.1", 8001, "z1")
    assert endpoint["pick"]  # echoed in the report, so this pick is closed
    status, body, _ = await http.call(
        "POST",
        "/v1/report/web",
        {"instance_id": "web-1", "latency_ms": 3.5, "pick": endpoint["pick"]},
    )
    assert (status, body) == (204, None)
    status, body, _ = await http.call("POST", "/v1/heartbeat/web", {"instance_id": "web-1"})
    assert status == 200
    assert body["ttl_s"] == 5
    status, body, _ = await http.call("POST", "/v1/deregister/web", {"instance_id": "web-1"})
    assert status == 200

    async def gone() -> bool:
        return (await http.call("GET", "/v1/resolve/web"))[0] == 404

    await until(gone, timeout=10)


async def test_resolve_query_key_zone_exclude_strategy(http: Http) -> None:
    await _register(http, "api", instance_id="a", zone="z1")
    await _register(http, "api", instance_id="b", zone="z2", port=8002)
    await _register(http, "api", instance_id="c", zone="z2", port=8003)

    async def three() -> bool:
        status, body, _ = await http.call("GET", "/v1/instances/api")
        return status == 200 and len(body["instances"]) == 3

    await until(three, timeout=10)
    for _ in range(5):
        status, body, _ = await http.call("GET", "/v1/resolve/api", params={"zone": "z1"})
        assert (status, body["instance_id"]) == (200, "a")
        status, body, _ = await http.call(
            "GET", "/v1/resolve/api", params=[("exclude", "a"), ("exclude", "b")]
        )
        assert (status, body["instance_id"]) == (200, "c")
        status, body, _ = await http.call("GET", "/v1/resolve/api", params={"exclude": "a,c"})
        assert body["instance_id"] == "b"
    picks = set()
    for _ in range(4):
        status, body, _ = await http.call(
            "GET", "/v1/resolve/api", params={"strategy": "consistent_hash", "key": "user-7"}
        )
        assert body["strategy"] == "consistent_hash"
        picks.add(body["instance_id"])
    assert len(picks) == 1  # one key, one instance
    status, body, _ = await http.call("GET", "/v1/resolve/api", params={"strategy": "fastest"})
    assert status == 400
    assert body["code"] == 400
    assert "unknown strategy 'fastest'; use one of random" in body["message"]
    status, body, _ = await http.call("GET", "/v1/resolve/api", params={"exclude": ["a", "b", "c"]})
    assert (status, body["code"]) == (503, 503)


async def test_contract_errors_are_http_statuses_with_code_and_message(http: Http) -> None:
    status, body, _ = await http.call("POST", "/v1/register/web", data=b"{not json")
    assert status == 400
    assert body["message"].startswith("payload is not valid JSON")
    status, body, _ = await http.call("POST", "/v1/register/web", {**WEB, "port": 70000})
    assert (status, body) == (400, {"code": 400, "message": "port must be 1..65535, got 70000"})
    status, body, _ = await http.call("POST", "/v1/register/web", {"host": "h", "port": 1})
    assert status == 400
    assert body["message"].startswith("instance_id is required: instance_id must be 1 to 64")
    status, body, _ = await http.call("GET", "/v1/resolve/bad.name")
    assert status == 400
    assert "contains '.'" in body["message"]
    status, body, _ = await http.call("POST", "/v1/heartbeat/web", {"instance_id": "nobody"})
    assert status == 404
    assert "register it again" in body["message"]
    status, body, _ = await http.call("GET", "/v1/resolve/nothing")
    assert (status, body["code"]) == (404, 404)
    status, body, _ = await http.call("GET", "/v1/instances/api", params={"limit": "-1"})
    assert status == 400
    assert "limit must be an integer 0..100000" in body["message"]
    errors = http.gateway._runner.app[ERRORS]
    assert errors[("/v1/register/{service}", 400)] == 3  # counted, and logged


async def test_listings_config_and_history(http: Http, nc: Client) -> None:
    await _register(http, "web")
    status, body, _ = await http.call("GET", "/v1/services")
    assert (status, body["services"]) == (200, ["web"])
    status, body, _ = await http.call("GET", "/v1/instances/web", params={"limit": "1"})
    assert [i["instance_id"] for i in body["instances"]] == ["web-1"]
    status, body, _ = await http.call("GET", "/v1/config/web")
    assert (status, body["revision"], body["strategy"]) == (200, 0, "weighted")
    change = b'{"actor": "test", "strategy": "round_robin", "reason": "http test"}'
    await nc.request(subjects.change("web"), change, timeout=5)
    status, body, _ = await http.call("GET", "/v1/config/web")
    assert (body["revision"], body["strategy"]) == (1, "round_robin")
    status, body, _ = await http.call("GET", "/v1/history/web")
    assert [e["reason"] for e in body["entries"]] == ["http test"]
    # read-only: no write route for the governor
    status, body, _ = await http.call("POST", "/v1/config/web", {"actor": "x"})
    assert status == 405


async def test_no_worker_is_503_and_a_silent_one_is_504(
    nats_server: NatsServer, nc: Client
) -> None:
    async with stack(nats_server.url, balancer=False, governor=False, http_timeout_s=0.3) as http:
        status, body, _ = await http.call("GET", "/v1/config/web")
        assert (status, body["code"]) == (503, 503)
        assert "is the worker running?" in body["message"]
        await nc.subscribe(subjects.resolve("web"))  # hears, never answers
        await subscribed(nc)
        status, body, _ = await http.call("GET", "/v1/resolve/web")
        assert (status, body["code"]) == (504, 504), body
        assert "no reply on balancer.v1.resolve.web within 0.3 s" in body["message"]


async def test_a_malformed_error_code_from_a_worker_is_a_clean_error(
    nats_server: NatsServer, nc: Client
) -> None:
    async def liar(msg: Msg) -> None:  # an error reply whose code is no number
        await nc.publish(msg.reply, b"", headers={ERROR_CODE_HEADER: "teapot"})

    async with stack(nats_server.url, balancer=False, governor=False) as http:
        await nc.subscribe(subjects.config("web"), cb=liar)
        await subscribed(nc)
        status, body, _ = await http.call("GET", "/v1/config/web")
        # read with the bus's one mapping: a sentence that names the header, not a crash
        assert (status, body["code"]) == (500, 500), body
        assert body["message"] == (
            "a reply on governor.v1.config.web has a bad Nats-Service-Error-Code: 'teapot'"
        )


async def test_openapi_documents_every_route_and_routes_every_path(http: Http) -> None:
    status, doc, _ = await http.call("GET", "/v1/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = http.gateway._runner.app
    routed = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method not in ("HEAD", "*") and r.resource is not None
    }
    assert documented == routed
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(doc).replace("'", '"')))
    assert refs <= set(doc["components"]["schemas"])


async def test_tokens_guard_every_write(nats_server: NatsServer, tmp_path: Any) -> None:
    path = tmp_path / "tokens"
    path.write_text("web-token-0123456789 service web\nclient-token-0123456789 client web\n")
    async with stack(nats_server.url, tokens=str(path)) as http:
        status, body, _ = await http.call("POST", "/v1/register/web", WEB)
        assert (status, body["code"]) == (403, 403)
        assert "needs a token" in body["message"]
        bearer = {"Authorization": "Bearer web-token-0123456789"}
        consul = {"X-Consul-Token": "web-token-0123456789"}
        status, _, _ = await http.call("POST", "/v1/register/web", WEB, headers=bearer)
        assert status == 200
        status, body, _ = await http.call("POST", "/v1/register/api", WEB, headers=consul)
        assert status == 403
        assert "may not register or deregister service 'api'" in body["message"]
        client = {"X-Consul-Token": "client-token-0123456789"}
        report = {"instance_id": "web-1", "latency_ms": 1}
        status, _, _ = await http.call("POST", "/v1/report/web", report, headers=client)
        assert status == 204
        status, _, _ = await http.call("POST", "/v1/deregister/web", WEB, headers=client)
        assert status == 403
        consul_reg = {"Name": "web", "ID": "web-2", "Port": 81}
        status, text, _ = await http.call("PUT", "/v1/agent/service/register", consul_reg)
        assert status == 403
        assert "needs a token" in text  # Consul's paths answer in Consul's plain text
        status, _, _ = await http.call(
            "PUT", "/v1/agent/service/register", consul_reg, headers=consul
        )
        assert status == 200
        status, _, _ = await http.call("PUT", "/v1/agent/service/deregister/web-2", headers=client)
        assert status == 403
        status, _, _ = await http.call("GET", "/v1/instances/web")  # reads stay open
        assert status == 200


def _outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address  # noqa: S104


async def test_without_tokens_writes_only_from_loopback(nats_server: NatsServer) -> None:
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to send a write from")
    async with stack(nats_server.url, bind="0.0.0.0") as http:  # noqa: S104
        http.base = f"http://{outside}:{http.gateway.http_port}"
        status, body, _ = await http.call("POST", "/v1/register/web", WEB)
        assert status == 403
        assert (
            f"only from loopback without GATEWAY_TOKENS (this request came from {outside})"
            in body["message"]
        )
        status, _, _ = await http.call("GET", "/v1/services")
        assert status in (200, 503)  # reads are open (503: nothing registered is not news)
        http.base = f"http://127.0.0.1:{http.gateway.http_port}"
        status, _, _ = await http.call("POST", "/v1/register/web", WEB)
        assert status == 200


async def test_a_bad_token_file_stops_the_start(nats_server: NatsServer, tmp_path: Any) -> None:
    path = tmp_path / "tokens"
    path.write_text("# ok\nshort service web\n")
    with pytest.raises(StartupError, match=r"tokens line 2: a token must be 16 to 256"):
        async with run_gateway(nats_server.url, http_port=-1, tokens=str(path)):
            pass


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_resolves(http: Http) -> None:
    await _register(http, "web")
    await _resolvable(http, "web", "web-1")
    done = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--fail-with-body", f"{http.base}/v1/resolve/web?zone=z1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"instance_id":"web-1"' in done.stdout
