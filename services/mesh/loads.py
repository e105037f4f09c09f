"""Envoy's load reports (LRS) as Baton's call reports, as pure logic.

Envoy streams `LoadStatsRequest`s to `LoadReportingService/StreamLoadStats`: per cluster
(a Baton service), per locality, per endpoint (an address), the requests completed and
failed in the interval since the last report. Each endpoint's address is mapped to the
registered instance at that address; each completed request becomes one call report
(`ok` false for an error), so the balancers' latency, connection counts and outlier
ejection see traffic that went through Envoy as they see the SDK's.

Latency: LRS carries no per-request latency. When the backend reports a load metric
named `latency_ms` (ORCA), its mean over the interval is used; otherwise reports carry
0 ms (documented in docs/mesh.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from schemas.balancer import MAX_BATCH, BatchedReport

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from envoy.config.endpoint.v3 import load_report_pb2

__all__ = ["LATENCY_METRIC", "PER_ENDPOINT_MAX", "reports_of"]

LATENCY_METRIC: Final = "latency_ms"
# one endpoint's reports in one interval, at most: a flood of Envoy traffic costs the bus
# a bounded batch, and the balancer learns the ratio of failures all the same
PER_ENDPOINT_MAX: Final = MAX_BATCH // 10


def reports_of(
    clusters: Iterable[load_report_pb2.ClusterStats],
    instance_at: Callable[[str, str, int], str | None],
) -> dict[str, list[BatchedReport]]:
    """Per service, the call reports of one LoadStatsRequest. `instance_at(service, host,
    port)` names the instance registered at an address (None: unknown, skipped)."""
    out: dict[str, list[BatchedReport]] = {}
    for cluster in clusters:
        service = cluster.cluster_name
        for locality in cluster.upstream_locality_stats:
            for endpoint in locality.upstream_endpoint_stats:
                sock = endpoint.address.socket_address
                instance = instance_at(service, sock.address, sock.port_value)
                if instance is None:
                    continue
                batch = _endpoint_reports(instance, endpoint)
                if batch:
                    out.setdefault(service, []).extend(batch)
    return out


def _endpoint_reports(
    instance: str, endpoint: load_report_pb2.UpstreamEndpointStats
) -> list[BatchedReport]:
    completed = endpoint.total_successful_requests + endpoint.total_error_requests
    if completed <= 0:
        return []
    latency = 0.0
    for metric in endpoint.load_metric_stats:
        if metric.metric_name == LATENCY_METRIC and metric.num_requests_finished_with_metric:
            latency = max(0.0, metric.total_metric_value / metric.num_requests_finished_with_metric)
    # scale both down together when capped: the failure ratio is kept
    scale = min(1.0, PER_ENDPOINT_MAX / completed)
    errors = round(endpoint.total_error_requests * scale)
    oks = round(endpoint.total_successful_requests * scale)
    if endpoint.total_error_requests and not errors:
        errors = 1
    ok = BatchedReport(instance_id=instance, latency_ms=latency, ok=True)
    failed = BatchedReport(instance_id=instance, latency_ms=latency, ok=False)
    return [failed] * errors + [ok] * oks
