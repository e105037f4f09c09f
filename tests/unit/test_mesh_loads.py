"""Envoy's load reports (LRS) as call reports: services/mesh/loads.py."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import load_report_pb2

from services.mesh.loads import PER_ENDPOINT_MAX, reports_of


def endpoint(
    port: int, ok: int, errors: int, latency: float = 0.0
) -> load_report_pb2.UpstreamEndpointStats:
    stats = load_report_pb2.UpstreamEndpointStats(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="10.0.0.1", port_value=port)
        ),
        total_successful_requests=ok,
        total_error_requests=errors,
    )
    if latency:
        stats.load_metric_stats.add(
            metric_name="latency_ms",
            num_requests_finished_with_metric=ok + errors,
            total_metric_value=latency * (ok + errors),
        )
    return stats


def cluster(*endpoints: load_report_pb2.UpstreamEndpointStats) -> load_report_pb2.ClusterStats:
    return load_report_pb2.ClusterStats(
        cluster_name="api",
        upstream_locality_stats=[
            load_report_pb2.UpstreamLocalityStats(upstream_endpoint_stats=list(endpoints))
        ],
    )


def instance_at(service: str, host: str, port: int) -> str | None:
    return {("api", "10.0.0.1", 1): "a", ("api", "10.0.0.1", 2): "b"}.get((service, host, port))


def test_each_completed_request_is_one_report_and_errors_are_failures() -> None:
    out = reports_of(
        [cluster(endpoint(1, ok=3, errors=2), endpoint(2, ok=1, errors=0))], instance_at
    )
    pairs = sorted((r.instance_id, r.ok) for r in out["api"])
    assert pairs == [("a", False), ("a", False), ("a", True), ("a", True), ("a", True), ("b", True)]


def test_an_address_no_instance_holds_is_skipped() -> None:
    assert reports_of([cluster(endpoint(9, ok=5, errors=0))], instance_at) == {}


def test_a_latency_load_metric_gives_each_report_its_mean() -> None:
    out = reports_of([cluster(endpoint(1, ok=2, errors=0, latency=12.5))], instance_at)
    assert {r.latency_ms for r in out["api"]} == {12.5}


def test_a_flood_is_capped_keeping_the_failure_ratio() -> None:
    out = reports_of([cluster(endpoint(1, ok=90_000, errors=10_000))], instance_at)
    reports = out["api"]
    assert len(reports) == PER_ENDPOINT_MAX
    assert sum(not r.ok for r in reports) == PER_ENDPOINT_MAX // 10
