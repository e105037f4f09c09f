"""The operator console in Debian's Chromium: a real gateway before real workers, a real
browser, the page's own clicks; what the page shows is checked against NATS.

Screenshots of each page go to `BATON_CONSOLE_SHOTS` when it is set (`just console-shots`
writes docs/console/), else to the test's own folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from aiohttp import web
from browser import CONSOLE_MARKS, XSS, Browser, browser, token_file
from httpgateway import Http, stack
from netns import NetnsPair, netns_unavailable
from tcpproxy import TcpProxy
from waiting import until

from schemas import subjects
from schemas.checks import CheckResult
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch, ServiceConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer

pytestmark = CONSOLE_MARKS

ADMIN = "console-admin-token-0123"
READER = "console-reader-token-0123"


def _instance(instance_id: str, port: int, **fields: Any) -> dict[str, Any]:
    return {"instance_id": instance_id, "host": "127.0.0.1", "port": port, "zone": "z1", **fields}


async def _register(http: Http, service: str, body: dict[str, Any], **kw: Any) -> None:
    status, reply, _ = await http.call("POST", f"/v1/register/{service}", body, **kw)
    assert status == 200, reply


async def _in_view(http: Http, service: str, instance_id: str) -> None:
    def seen() -> bool:
        state = http.gateway.view.service(service)
        return state is not None and instance_id in state.instances

    await until(seen, timeout=10)


@pytest.fixture
async def http(nats_server: NatsServer) -> AsyncIterator[Http]:
    async with stack(nats_server.url, dns_port=-1) as client:
        yield client


@pytest.fixture
async def page(http: Http) -> AsyncIterator[Browser]:
    async with browser(http.base) as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("BATON_CONSOLE_SHOTS") or tmp_path)


async def test_the_page_is_served_with_a_policy_against_foreign_and_inline_scripts(
    http: Http,
) -> None:
    status, body, headers = await http.call("GET", "/", allow_redirects=False)
    assert (status, headers["Location"]) == (302, "/ui/")
    status, body, headers = await http.call("GET", "/ui/")
    assert status == 200
    assert '<script type="module" src="/ui/console.js">' in body
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert "http" not in body.replace("http-equiv", "")  # nothing fetched from elsewhere
    status, body, _ = await http.call("GET", "/ui/../pyproject.toml")
    assert status == 404
    status, body, _ = await http.call("GET", "/ui/nothing.js")
    assert status == 404
    assert body["message"] == "the console has no file 'nothing.js'; its page is /ui/"


async def test_overview_pages_and_filters_by_name_tag_zone_and_state(http: Http) -> None:
    for name, zone in (("alpha", "z1"), ("beta", "z2"), ("gamma", "z2")):
        meta = {"team": "pay"} if name == "beta" else {}
        await _register(http, name, _instance(f"{name}-1", 8600, zone=zone, metadata=meta))
    await _in_view(http, "gamma", "gamma-1")

    async def names(query: str) -> tuple[list[str], str]:
        status, body, _ = await http.call("GET", f"/v1/ui/overview?{query}")
        assert status == 200, body
        return [s["service"] for s in body["services"]], body["next_after"]

    assert await names("limit=2") == (["alpha", "beta"], "beta")
    assert await names("limit=2&after=beta") == (["gamma"], "")
    assert await names("zone=z2") == (["beta", "gamma"], "")
    assert await names("tag=team=pay") == (["beta"], "")
    assert await names("name=mm") == (["gamma"], "")
    assert await names("state=drained") == ([], "")
    status, body, _ = await http.call("GET", "/v1/ui/overview?state=sleepy")
    assert status == 400
    assert body["message"] == (
        "state 'sleepy' is not one of passing, warning, critical, drained, ejected"
    )
    status, body, _ = await http.call(
        "POST", "/v1/ui/services/alpha/change", {"outlier": {"consecutive_failure": 3}}
    )
    assert status == 400
    assert body["message"].startswith(
        "no outlier setting consecutive_failure; use enabled, consecutive_failures,"
    )


async def test_overview_lists_a_registered_service_and_a_stopped_heartbeat_turns_critical_live(
    http: Http, page: Browser, shots: Path
) -> None:
    await _register(http, "orders", _instance("orders-1", 8001, ttl_s=1, version="1.4.2"))
    for n, zone in ((1, "z1"), (2, "z2"), (3, "z2")):  # a fleet for the screenshot
        await _register(http, "search", _instance(f"search-{n}", 8010 + n, ttl_s=30, zone=zone))

    async def beat() -> None:
        while True:
            await http.call("POST", "/v1/heartbeat/orders", {"instance_id": "orders-1"})
            await asyncio.sleep(0.2)  # a heartbeat's period, not a wait for a condition

    beating = asyncio.create_task(beat())
    try:
        await page.open("/")
        await page.text("#services tr[data-service=orders]", "orders")
        await page.text("#services tr[data-service=search]", "search")
        await page.screenshot(shots / "overview.png")
        await page.go("#/service/orders")
        await page.text("tr[data-instance=orders-1] .state", "passing")
        await page.js("window.sameDocument = true")
    finally:
        beating.cancel()
    # no reload: the same document learns it from the event stream
    await page.text("tr[data-instance=orders-1] .state", "critical")
    await page.text("tr[data-instance=orders-1] .why", "no heartbeat")
    assert await page.js("return window.sameDocument") is True
    await page.screenshot(shots / "service-critical.png")


async def _result(nc: Client, service: str, instance_id: str, status: str, output: str) -> None:
    """A change of the check's status, as the prober publishes it (the registry keeps it)."""
    result = CheckResult(
        instance_id=instance_id,
        check_id="http",
        status=status,  # type: ignore[arg-type]  # a CheckStatus literal, from the caller
        output=output,
        at=datetime.now(UTC),
    )
    await nc.publish(subjects.check_transitions(service), msgspec.json.encode(result))


async def test_check_output_is_shown_as_text_and_a_critical_check_says_why(
    http: Http, page: Browser, nc: Client, shots: Path
) -> None:
    check = {"check_id": "http", "kind": "http", "target": "http://127.0.0.1:8701/health"}
    for n in (1, 2, 3):
        body = _instance(f"db-{n}", 8700 + n, ttl_s=30, checks=[{**check, "status": "passing"}])
        await _register(http, "db", body)
    await _in_view(http, "db", "db-3")
    await _result(nc, "db", "db-2", "warning", "HTTP 429: slow down")
    await _result(nc, "db", "db-3", "critical", f"HTTP 500: {XSS}")
    await page.open("/")
    row = "#services tr[data-service=db]"
    await page.text(row, "db")

    async def one_passing_one_warning_one_critical() -> bool | None:
        cells = "Array.from(document.querySelectorAll(arguments[0] + ' td')).slice(2, 5)"
        counts = await page.js(f"return {cells}.map((c) => c.textContent)", row)
        return counts == ["1", "1", "1"] or None

    await until(one_passing_one_warning_one_critical, timeout=10)
    await page.go("#/service/db")
    await page.text("tr[data-instance=db-3] .state", "critical")
    await page.text("tr[data-instance=db-3] .why", f"check http critical: HTTP 500: {XSS}")
    await page.text("tr[data-instance=db-2] .state", "warning")
    await page.text("tr[data-instance=db-2] .check", "HTTP 429: slow down")
    await page.text("tr[data-instance=db-1] .check", "http passing")
    assert await page.js("return document.querySelectorAll('main img').length") == 0
    assert not await page.alert_open()
    await page.screenshot(shots / "service-checks.png")


async def test_drain_from_the_page_is_seen_by_a_nats_resolve(
    http: Http, page: Browser, nc: Client, shots: Path
) -> None:
    for n in (1, 2):
        await _register(http, "web", _instance(f"web-{n}", 8000 + n, ttl_s=30))
    await _in_view(http, "web", "web-2")
    await page.open("/#/service/web")
    await page.click("tr[data-instance=web-1] button.drain")
    await page.text("#message", "Done.")
    await page.text("tr[data-instance=web-1] .state", "drained")

    async def web_1_gets_nothing() -> bool:
        for _ in range(10):
            reply = await nc.request(subjects.resolve("web"), b"{}", timeout=2)
            if msgspec.json.decode(reply.data)["instance_id"] == "web-1":
                return False
        return True

    await until(web_1_gets_nothing, timeout=10)
    await page.screenshot(shots / "service.png")
    await page.click("tr[data-instance=web-1] button.undrain")
    await page.text("tr[data-instance=web-1] .state", "passing")
    # a weight and a strategy, each one revision of the governor
    await page.type("tr[data-instance=web-1] input.weight", "7")
    await page.click("tr[data-instance=web-1] button.set-weight")
    await page.text("tr[data-instance=web-1]", "7 (set by config)")
    await page.choose("#strategy", "round_robin")
    await page.click("#set-strategy")
    config = await until(lambda: _strategy(nc, "web", "round_robin"), timeout=10)
    assert config.instances["web-1"].weight == 7
    # deregistration asks first, then the registry forgets the instance
    await page.click("tr[data-instance=web-2] button.deregister")
    await page.click("tr[data-instance=web-2] button.confirm")
    await until(lambda: "web-2" not in http.gateway.view.service("web").instances, timeout=10)
    await page.text("#instances", "web-1")


async def test_outlier_settings_from_the_page_reach_the_governor_and_a_bad_one_says_why(
    http: Http, page: Browser, nc: Client
) -> None:
    await _register(http, "ledger", _instance("ledger-1", 8801, ttl_s=30))
    await _in_view(http, "ledger", "ledger-1")
    await page.open("/#/service/ledger")
    await page.type("#outlier input[data-setting=consecutive_failures]", "3")
    await page.type("#outlier input[data-setting=base_ejection_s]", "12.5")
    await page.type("#outlier input[data-setting=success_rate]", "false")
    await page.click("#set-outlier")
    await page.text("#message", "Done.")
    config = await until(lambda: _outlier_failures(nc, "ledger", 3), timeout=10)
    assert (config.outlier.base_ejection_s, config.outlier.success_rate) == (12.5, False)
    assert config.outlier.max_ejection_s == 300.0  # not named: kept
    # the page redraws with the governor's values, then a value the governor refuses
    await page.text("#outlier", "consecutive_failures")
    await page.type("#outlier input[data-setting=max_ejection_s]", "5")
    await page.click("#set-outlier")
    await page.text(
        "#message", "max_ejection_s (5) must be at least base_ejection_s (12.5); raise max_"
    )
    await page.type("#outlier input[data-setting=max_ejection_s]", "0")
    await page.click("#set-outlier")
    # the governor's rule for the field, as `baton set ledger outlier max_ejection_s=0` says
    await page.text(
        "#message",
        "Refused (400): max_ejection_s must be a number of seconds 0.05..86400, at least "
        "base_ejection_s, got 0 (at outlier.max_ejection_s)",
    )
    reply = await nc.request(subjects.config("ledger"), b"{}", timeout=5)
    kept = msgspec.json.decode(reply.data, type=ServiceConfig)
    assert (kept.revision, kept.outlier.max_ejection_s) == (config.revision, 300.0)


async def _outlier_failures(nc: Client, service: str, failures: int) -> ServiceConfig | None:
    reply = await nc.request(subjects.config(service), b"{}", timeout=5)
    config = msgspec.json.decode(reply.data, type=ServiceConfig)
    return config if config.outlier.consecutive_failures == failures else None


async def test_a_dropped_stream_says_so_and_resyncs_by_itself(http: Http, nc: Client) -> None:
    await _register(http, "cart", _instance("cart-1", 8401, ttl_s=30))
    await _in_view(http, "cart", "cart-1")
    proxy = TcpProxy(int(http.base.rsplit(":", 1)[1]))
    await proxy.start()
    async with browser(f"http://127.0.0.1:{proxy.port}") as page:
        await page.open("/#/service/cart")
        await page.text("tr[data-instance=cart-1] .state", "passing")
        await proxy.cut()
        await page.text("#status", "away")
        # changed while the page cannot hear of it
        await _change(nc, "cart", instances={"cart-1": OverridePatch(drained=True)})
        await until(lambda: http.gateway.view.service("cart").instances["cart-1"].drained)
        await proxy.start()
        await page.live()
        await page.text("tr[data-instance=cart-1] .state", "drained")
    await proxy.cut()


async def _strategy(nc: Client, service: str, strategy: str) -> ServiceConfig | None:
    reply = await nc.request(subjects.config(service), b"{}", timeout=5)
    config = msgspec.json.decode(reply.data, type=ServiceConfig)
    return config if config.strategy == strategy else None


async def _change(nc: Client, service: str, **fields: Any) -> ConfigApplied:
    change = ConfigChange(actor="test", reason="by the test", **fields)
    reply = await nc.request(subjects.change(service), msgspec.json.encode(change), timeout=5)
    return msgspec.json.decode(reply.data, type=ConfigApplied)


async def test_rollback_from_the_history_page_restores_the_previous_revision(
    http: Http, page: Browser, nc: Client, shots: Path
) -> None:
    await _register(http, "pay", _instance("pay-1", 8101, ttl_s=30))
    await _in_view(http, "pay", "pay-1")
    first = await _change(nc, "pay", strategy="round_robin")
    second = await _change(nc, "pay", strategy="least_connections")
    await page.open("/#/history/pay")
    await page.text(f"tr[data-revision='{second.revision}']", "least_connections")
    await page.screenshot(shots / "history.png")
    await page.click(f"tr[data-revision='{first.revision}'] button.rollback")
    await page.text("#message", "Done.")

    async def restored() -> str | None:
        reply = await nc.request(subjects.config("pay"), b"{}", timeout=5)
        config = msgspec.json.decode(reply.data, type=ServiceConfig)
        return config.strategy if config.revision > second.revision else None

    assert await until(restored, timeout=10) == "round_robin"
    await page.text("#history", f"rollback to r{first.revision}")  # live, without a reload


async def test_markup_in_metadata_is_shown_as_text_and_runs_nothing(
    http: Http, page: Browser
) -> None:
    await _register(http, "xss", _instance("xss-1", 8201, metadata={"note": XSS}, version=XSS))
    await _in_view(http, "xss", "xss-1")
    await page.open("/#/service/xss")
    await page.text("tr[data-instance=xss-1]", f"note={XSS}")
    assert await page.js("return document.querySelectorAll('main img').length") == 0
    assert not await page.alert_open()


async def test_workers_page_lists_every_replica(http: Http, page: Browser, shots: Path) -> None:
    await page.open("/#/workers")
    for worker in ("baton-registry", "baton-governor", "baton-balancer", "baton-gateway"):
        await page.text("#workers", worker)
    await page.text("#leader", "The registry replica ")
    await page.screenshot(shots / "workers.png")


@pytest.fixture
async def guarded(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Http]:
    tokens = token_file(tmp_path, ADMIN, READER)
    grafana = "http://grafana.test:3000"
    async with stack(nats_server.url, dns_port=-1, tokens=tokens, grafana_url=grafana) as client:
        yield client


async def test_a_read_only_token_sees_everything_and_changes_nothing(
    guarded: Http, nc: Client
) -> None:
    await _register(
        guarded, "api", _instance("api-1", 8301, ttl_s=30), headers={"X-Consul-Token": ADMIN}
    )
    await _in_view(guarded, "api", "api-1")
    async with browser(guarded.base) as page:
        await page.open("/#/service/api")
        await page.text("main a[rel=noreferrer]", "Grafana")
        link = await page.js("return document.querySelector('main a[rel=noreferrer]').href")
        assert link == "http://grafana.test:3000/d/baton-service?var-service=api"
        await page.click("tr[data-instance=api-1] button.drain")  # no token yet
        await page.text("#message", "Refused (403): this write needs a token")
        await page.type("#token", READER)
        await page.click("#token-form button")
        await page.click("tr[data-instance=api-1] button.drain")
        await page.text("#message", "(reader) may not change the config of service 'api'")
        await page.text("tr[data-instance=api-1] .state", "passing")
        await page.type("#token", ADMIN)
        await page.click("#token-form button")
        await page.click("tr[data-instance=api-1] button.drain")
        await page.text("tr[data-instance=api-1] .state", "drained")
    reply = await nc.request(subjects.config("api"), b"{}", timeout=5)
    config = msgspec.json.decode(reply.data, type=ServiceConfig)
    assert config.instances["api-1"].drained is True
    reply = await nc.request(subjects.history("api"), b"{}", timeout=5)
    assert msgspec.json.decode(reply.data)["entries"][-1]["actor"] == "alice"


_NO_NETNS = netns_unavailable()


@pytest.mark.skipif(bool(_NO_NETNS), reason=_NO_NETNS or "ip netns works")
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_without_tokens_a_write_from_another_host_is_refused(http: Http) -> None:
    """The gateway also listens in a network namespace; curl writes from the other side of
    a veth, so the write comes from an address that is not loopback."""
    await _register(http, "edge", _instance("edge-1", 8501, ttl_s=30))
    pair = NetnsPair.create()
    try:
        with pair.entered("a"):
            site = web.TCPSite(http.gateway._runner, pair.addr_a, 0)
            await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://{pair.addr_a}:{port}/v1/ui/services/edge"
        for action, body in (
            ("change", '{"instance_id": "edge-1", "drained": true}'),
            ("rollback", '{"to_revision": 1}'),
            ("deregister", '{"instance_id": "edge-1"}'),
        ):
            curl = await asyncio.create_subprocess_exec(
                *pair.prefix("b"), "curl", "-sS", "-X", "POST", "-d", body, f"{base}/{action}",
                "-H", "Content-Type: application/json", stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await curl.communicate()
            reply = msgspec.json.decode(out)
            assert reply["code"] == 403, reply
            assert f"(this request came from {pair.addr_b})" in reply["message"]
        await site.stop()
    finally:
        pair.destroy()
    state = http.gateway.view.service("edge")
    assert not state.instances["edge-1"].drained  # nothing was changed
