"""Prometheus (Debian's, not ours) discovers Baton's instances through the gateway,
scrapes them, and drops one that is killed: with `consul_sd_configs` where the binary has
Consul discovery, and with `http_sd_configs` (which every build has)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from httpgateway import Http, stack
from ports import free_port
from waiting import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from natsserver import NatsServer

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (`just prometheus` installs it)"
)

HEAD = """
global:
  scrape_interval: 1s
  scrape_timeout: 800ms
scrape_configs:
  - job_name: baton
"""
# The README's snippets, with the gateway's port and short intervals for a test.
CONSUL_SD = """
    consul_sd_configs:
      - server: 127.0.0.1:{gateway}
        services: [web]
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_consul_service_id]
        target_label: baton_instance
"""
HTTP_SD = """
    http_sd_configs:
      - url: http://127.0.0.1:{gateway}/v1/prometheus/targets?service=web
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_baton_service_id]
        target_label: baton_instance
"""
HEALTH = {"consul": "__meta_consul_health", "http": "__meta_baton_health"}


def _has_consul_sd() -> str:
    """Empty if this Prometheus can read consul_sd_configs, else why not."""
    if PROMETHEUS is None or shutil.which("promtool") is None:
        return "prometheus is not installed (`just prometheus` installs it)"
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as config:
        config.write(HEAD + CONSUL_SD.format(gateway=1))
        config.flush()
        checked = subprocess.run(  # noqa: S603
            ["promtool", "check", "config", config.name],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
    if checked.returncode == 0:
        return ""
    return (
        "this prometheus is built without Consul discovery (Debian's compiles it out: "
        f"{(checked.stdout + checked.stderr).strip().splitlines()[-1].strip()}); "
        "http_sd_configs is tested instead"
    )


class Backend:
    """A real HTTP service with /metrics, registered through the gateway's Consul API and
    kept alive by TTL passes, as an application using a Consul library would be."""

    def __init__(self, name: str, http: Http) -> None:
        self.name = name
        self.http = http
        self.scrapes = 0
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.passing: asyncio.Task[None] | None = None

    async def metrics(self, request: web.Request) -> web.Response:
        del request
        self.scrapes += 1
        return web.Response(text=f'demo_requests_total{{backend="{self.name}"}} {self.scrapes}\n')

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        body = {
            "Name": "web",
            "ID": self.name,
            "Address": "127.0.0.1",
            "Port": self.port,
            "Check": {"TTL": "1s", "Status": "passing"},
        }
        status, text, _ = await self.http.call("PUT", "/v1/agent/service/register", body)
        assert status == 200, text
        self.passing = asyncio.ensure_future(self._pass())

    async def _pass(self) -> None:
        while True:
            await self.http.call("PUT", f"/v1/agent/check/pass/service:{self.name}")
            await asyncio.sleep(0.3)  # the application's own heartbeat period

    async def kill(self) -> None:
        if self.passing is not None:
            self.passing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.passing
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def prometheus_port(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(discovery: str, gateway_port: int) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(HEAD + discovery.format(gateway=gateway_port))
        log = (tmp_path / "prometheus.log").open("wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(  # noqa: S603  # our own binary path and arguments
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
    for log in logs:
        log.close()


async def _targets(session: aiohttp.ClientSession, port: int) -> list[dict[str, Any]]:
    with contextlib.suppress(aiohttp.ClientError):
        url = f"http://127.0.0.1:{port}/api/v1/targets?state=active"
        async with session.get(url) as resp:
            if resp.status == 200:
                body = await resp.json()
                return list(body["data"]["activeTargets"])
    return []


@pytest.fixture
async def http(nats_server: NatsServer) -> AsyncIterator[Http]:
    async with stack(nats_server.url) as client:
        yield client


@pytest.mark.parametrize("discovery", ["consul", "http"])
async def test_prometheus_discovers_scrapes_and_drops(
    http: Http, prometheus_port: Any, discovery: str
) -> None:
    if discovery == "consul" and (why := _has_consul_sd()):
        pytest.skip(why)
    backends = [Backend(f"web-{i}", http) for i in range(3)]
    for backend in backends:
        await backend.start()
    config = CONSUL_SD if discovery == "consul" else HTTP_SD
    port = prometheus_port(config, http.gateway.http_port)
    session = http.session

    async def scraped(expected: set[str]) -> bool:
        targets = await _targets(session, port)
        ids = {t["labels"].get("baton_instance") for t in targets}
        return ids == expected and all(t["health"] == "up" for t in targets)

    try:
        await until(lambda: scraped({b.name for b in backends}), timeout=45)
        targets = {t["labels"]["baton_instance"]: t for t in await _targets(session, port)}
        for backend in backends:
            assert targets[backend.name]["scrapeUrl"] == f"http://127.0.0.1:{backend.port}/metrics"
            assert targets[backend.name]["discoveredLabels"][HEALTH[discovery]] == "passing"
            assert backend.scrapes >= 1
        await backends[0].kill()
        await until(lambda: scraped({b.name for b in backends[1:]}), timeout=45)
    finally:
        for backend in backends:
            await backend.kill()
