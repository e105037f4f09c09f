"""One example of each message, as the workers would send or accept it.

The generator puts them into docs/asyncapi.yaml and docs/schemas/ (`examples`), and the
tests check each against its JSON Schema (with ajv) and the workers' decoders (msgspec),
so an example can never show a payload the workers would refuse. A new message's example
is one more entry in EXAMPLES (optional: a message without one is shown without).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from schemas.balancer import CallReport, Endpoint, PickCount, PickCounts, ResolveRequest
from schemas.errors import ErrorReply
from schemas.governor import (
    ConfigApplied,
    ConfigChange,
    ConfigHistory,
    InstanceOverride,
    OverridePatch,
    Rollback,
    ServiceConfig,
)
from schemas.micro import EndpointInfo, EndpointStats, Info, Ping, Stats
from schemas.registry import (
    Ack,
    Deregistration,
    Empty,
    Heartbeat,
    Instance,
    InstanceEvent,
    InstanceList,
    InstancesQuery,
    Registration,
    ServiceList,
)

if TYPE_CHECKING:
    from msgspec import Struct

__all__ = ["EXAMPLES"]

_AT = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
_WORKER_ID = "Q1XRkA3Vd6rxYjlWZqF1tR"  # a NUID: 22 characters
_PROCESS = {"pid": "4242", "host": "node-1"}
_INSTANCE = Instance(
    instance_id="orders-1",
    host="10.0.0.7",
    port=8080,
    weight=100,
    zone="eu-1a",
    version="2.4.1",
    metadata={"max_inflight": "50"},
    healthy=True,
    drained=False,
    inflight=3,
    registered_at=_AT,
    last_seen=_AT,
    ttl_s=15.0,
    cpu=0.42,
    mem=0.61,
    latency_ms=12.5,
)
_CONFIG = ServiceConfig(
    service="orders",
    revision=2,
    strategy="least_response_time",
    protect_threshold=0.5,
    instances={"orders-2": InstanceOverride(weight=20, drained=True)},
)
_APPLIED = ConfigApplied(
    service="orders",
    revision=2,
    config=_CONFIG,
    actor="ann",
    reason="drain orders-2 for its upgrade",
    at=_AT,
)

EXAMPLES: Final[tuple[Struct, ...]] = (
    Registration(
        instance_id="orders-1",
        host="10.0.0.7",
        port=8080,
        zone="eu-1a",
        version="2.4.1",
        metadata={"max_inflight": "50"},
    ),
    Ack(instance_id="orders-1", ttl_s=15.0, heartbeat_s=5.0),
    Heartbeat(instance_id="orders-1", inflight=3, cpu=0.42, mem=0.61, latency_ms=12.5),
    Deregistration(instance_id="orders-1"),
    InstancesQuery(limit=500, after="orders-0"),
    InstanceList(service="orders", instances=[_INSTANCE], epoch="5f2a9c01b3d4", seq=42),
    Empty(),
    ServiceList(services=["orders", "payments"], epoch="5f2a9c01b3d4", seq=42),
    InstanceEvent(
        kind="registered",
        service="orders",
        instance=_INSTANCE,
        at=_AT,
        epoch="5f2a9c01b3d4",
        seq=43,
    ),
    ResolveRequest(zone="eu-1a", exclude=["orders-3"]),
    Endpoint(
        instance_id="orders-1",
        host="10.0.0.7",
        port=8080,
        zone="eu-1a",
        metadata={"max_inflight": "50"},
        strategy="least_response_time",
        pick="9c41d2e0.1817",
        version="2.4.1",
        weight=100,
    ),
    CallReport(instance_id="orders-1", latency_ms=11.8, ok=True, pick="9c41d2e0.1817"),
    PickCounts(
        service="orders",
        node="9c41d2e0",
        interval_s=1.0,
        picks=[PickCount(instance_id="orders-1", strategy="weighted", count=118, weight=100)],
    ),
    ConfigChange(
        actor="ann",
        reason="drain orders-2 for its upgrade",
        expected_revision=1,
        instances={"orders-2": OverridePatch(drained=True), "orders-9": None},
    ),
    _APPLIED,
    _CONFIG,
    ConfigHistory(service="orders", entries=[_APPLIED]),
    Rollback(actor="ann", to_revision=1, reason="the drain is over"),
    ErrorReply(code=400, message="port must be 1..65535, got 70000"),
    Ping(name="baton-balancer", id=_WORKER_ID, version="0.1.0", metadata=_PROCESS),
    Info(
        name="baton-balancer",
        id=_WORKER_ID,
        version="0.1.0",
        metadata=_PROCESS,
        description="The balancer worker: answers resolve requests from its own view of the fleet.",
        endpoints=[
            EndpointInfo(
                name="resolve",
                subject="balancer.v1.resolve.>",
                queue_group="balancer",
                metadata={"payload": "ResolveRequest", "replies": "true"},
            )
        ],
    ),
    Stats(
        name="baton-balancer",
        id=_WORKER_ID,
        version="0.1.0",
        metadata=_PROCESS,
        started="2026-01-02T03:04:05.123456Z",
        endpoints=[
            EndpointStats(
                name="resolve",
                subject="balancer.v1.resolve.>",
                queue_group="balancer",
                num_requests=1200,
                num_errors=2,
                last_error="404:service 'nope' has no registered instances",
                processing_time=9_600_000,
                average_processing_time=8000,
            )
        ],
    ),
)
