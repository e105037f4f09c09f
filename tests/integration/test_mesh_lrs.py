"""The mesh's LRS server (LoadReportingService/StreamLoadStats) through a real grpcio
client: a load report naming a registered instance's address comes out as call reports
on balancer.v1.reports.{service}, a backend's errors as failures."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

import grpc
import msgspec
import pytest
from conftest import reg
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from test_mesh_envoy import mesh  # noqa: F401  # a fixture: governor and mesh workers
from waiting import until

from schemas import subjects
from schemas.balancer import CallReports
from schemas.registry import Ack

if TYPE_CHECKING:
    from services.bus import Bus
    from services.mesh.worker import Mesh

pytestmark = pytest.mark.usefixtures("registry")


def load_report(port: int, ok: int, errors: int) -> lrs_pb2.LoadStatsRequest:
    stats = load_report_pb2.UpstreamEndpointStats(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
        total_successful_requests=ok,
        total_error_requests=errors,
    )
    cluster = load_report_pb2.ClusterStats(
        cluster_name="api",
        upstream_locality_stats=[
            load_report_pb2.UpstreamLocalityStats(upstream_endpoint_stats=[stats])
        ],
    )
    return lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="lrs-test"), cluster_stats=[cluster])


async def test_a_load_report_becomes_call_reports_on_the_bus(bus: Bus, mesh: Mesh) -> None:  # noqa: F811
    await bus.request(subjects.register("api"), reg("a", port=7001), Ack)
    await until(lambda: "api" in mesh.view.services, timeout=10, what="the mesh seeing a")
    seen: collections.Counter[tuple[str, bool]] = collections.Counter()

    async def on_reports(msg: Any) -> None:
        for report in msgspec.json.decode(msg.data, type=CallReports).reports:
            seen[report.instance_id, report.ok] += 1

    sub = await bus.nc.subscribe(subjects.reports("api"), cb=on_reports)
    requests: asyncio.Queue[lrs_pb2.LoadStatsRequest | None] = asyncio.Queue()

    async def outgoing() -> Any:
        while (item := await requests.get()) is not None:
            yield item

    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        stub = lrs_pb2_grpc.LoadReportingServiceStub(channel)
        call = stub.StreamLoadStats(outgoing())
        await requests.put(lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="lrs-test")))
        settings = await call.read()
        assert settings.send_all_clusters
        assert settings.report_endpoint_granularity
        await requests.put(load_report(7001, ok=3, errors=2))
        await until(lambda: seen == {("a", True): 3, ("a", False): 2}, timeout=10)
        await requests.put(None)
        call.cancel()
    await sub.unsubscribe()
