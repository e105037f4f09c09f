"""A real grpcio client on `xds:///api`, with a bootstrap naming only the mesh worker:
its calls spread over real gRPC servers registered in Baton, and a drained one stops
getting calls. The client asks for all four types (LDS, RDS, CDS, EDS) and ACKs them."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from conftest import reg
from test_mesh_envoy import mesh  # noqa: F401  # a fixture: governor and mesh workers
from waiting import until
from workers import run_mesh

from schemas import subjects
from schemas.governor import ConfigApplied, ConfigChange, OverridePatch
from schemas.registry import Ack
from services.errors import StartupError
from services.mesh.protocol import CLUSTER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

    from services.bus import Bus
    from services.mesh.worker import Mesh

pytestmark = pytest.mark.usefixtures("registry")

METHOD = "/baton.test.Echo/Who"


def bootstrap(xds_port: int) -> dict[str, Any]:
    """A gRPC client's xDS bootstrap naming only the mesh worker."""
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": "grpc-test", "locality": {"zone": "z1"}},
    }


@asynccontextmanager
async def server(name: str) -> AsyncIterator[int]:
    """A real grpcio server whose one method answers its name; yields its port."""

    async def who(request: bytes, context: Any) -> bytes:
        del request, context
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "baton.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    srv = grpc.aio.server()
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield port
    finally:
        await srv.stop(0)


async def test_a_grpc_client_on_xds_follows_the_fleet(
    bus: Bus,
    mesh: Mesh,  # noqa: F811  # the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(bootstrap(mesh.port)))
    async with AsyncExitStack() as stack:
        for name in ("a", "b", "c"):
            port = await stack.enter_async_context(server(name))
            await bus.request(subjects.register("api"), reg(name, port=port, zone="z1"), Ack)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel("xds:///api"))
        who = channel.unary_unary(METHOD)

        async def call() -> str:
            answer: bytes = await who(b"", timeout=5)
            return answer.decode()

        seen: set[str] = set()

        async def all_reached() -> bool:
            seen.add(await call())
            return seen == {"a", "b", "c"}

        await until(all_reached, timeout=30, what="calls reaching a, b and c")

        change = ConfigChange(actor="test", instances={"b": OverridePatch(drained=True)})
        await bus.request(subjects.change("api"), change, ConfigApplied)

        async def b_left() -> bool:  # a round of calls that all miss b: the client knows
            return "b" not in [await call() for _ in range(6)]

        await until(b_left, timeout=30, what="calls no longer reaching the drained b")
        answers = [await call() for _ in range(30)]
        assert "b" not in answers
        assert set(answers) == {"a", "c"}
        assert sum(mesh.nacks.values()) == 0  # the client accepted every response


async def test_a_nack_is_counted_and_the_next_change_is_taken(
    bus: Bus,
    mesh: Mesh,  # noqa: F811  # the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gRPC has no RANDOM policy: the client refuses the cluster, the mesh counts the NACK
    and keeps serving; a strategy gRPC knows is the next version, and calls get through."""
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps(bootstrap(mesh.port)))
    async with AsyncExitStack() as stack:
        port = await stack.enter_async_context(server("a"))
        await bus.request(
            subjects.change("api"), ConfigChange(actor="t", strategy="random"), ConfigApplied
        )
        await bus.request(subjects.register("api"), reg("a", port=port), Ack)
        await until(lambda: mesh.view.service("api") is not None)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel("xds:///api"))
        who = channel.unary_unary(METHOD)

        async def first_call() -> bytes:
            answer: bytes = await who(b"", timeout=30, wait_for_ready=True)
            return answer

        calls = asyncio.create_task(first_call())
        await until(lambda: mesh.nacks[CLUSTER] >= 1, timeout=30, what="the client's NACK")
        assert not calls.done()  # the client has no cluster it accepts
        await bus.request(
            subjects.change("api"), ConfigChange(actor="t", strategy="round_robin"), ConfigApplied
        )
        assert await calls == b"a"


async def test_a_taken_port_is_a_clear_error_at_start(
    nats_server: NatsServer,
    mesh: Mesh,  # noqa: F811  # the fixture imported above
) -> None:
    with pytest.raises(StartupError, match=f"cannot bind the xDS port 127.0.0.1:{mesh.port}"):
        async with run_mesh(nats_server.url, xds_port=mesh.port):
            pass
