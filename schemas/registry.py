"""Registry messages of the wire contract (docs/contract.md states every field).

Fields beyond the contract are marked "extension"; old senders and readers ignore them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

from schemas.checks import CheckDefinition, Checks, CheckState, CheckStatus
from schemas.fields import (
    Count,
    Host,
    InstanceId,
    Metadata,
    Millis,
    Port,
    ServiceName,
    Share,
    TtlSeconds,
    Version,
    Weight,
    Zone,
)

__all__ = [
    "Ack",
    "Deregistration",
    "Empty",
    "EventKind",
    "Heartbeat",
    "Instance",
    "InstanceEvent",
    "InstanceList",
    "InstancesQuery",
    "LeaseRecord",
    "Registration",
    "ReplicaSnapshot",
    "ReplicaStatus",
    "ServiceList",
    "SnapshotQuery",
]


class Empty(Struct, frozen=True, kw_only=True, gc=False):
    """The `{}` body of listing requests; an empty payload reads as one too."""


class InstancesQuery(Struct, frozen=True, kw_only=True, gc=False):
    """The `{}` body of `registry.v1.instances.{service}`; extension: optional paging.

    A service of many thousands of instances does not fit one NATS message (1 MiB by
    default): ask with `limit`, then again with `after` set to the reply's `next_after`.
    """

    after: str = ""
    limit: Annotated[int, Meta(ge=0, le=100_000)] = 0  # 0 = all


class Registration(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: InstanceId
    host: Host
    port: Port
    weight: Weight = 100
    zone: Zone = ""
    version: Version = ""
    metadata: Metadata = field(default_factory=dict)
    ttl_s: TtlSeconds = 15.0
    service: ServiceName | None = None  # optional; must equal the subject's service
    # extension: active health checks the prober runs (schemas/checks.py)
    checks: Checks = field(default_factory=list)
    # extension: the weight while its checks say warning (Consul's Weights.Warning);
    # null: its weight
    warning_weight: Weight | None = None


class Heartbeat(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: InstanceId
    inflight: Count | None = None
    cpu: Share | None = None
    mem: Share | None = None
    latency_ms: Millis | None = None
    service: ServiceName | None = None


class Deregistration(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: InstanceId
    service: ServiceName | None = None


class Ack(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    ok: bool = True
    # extension: the lease the registry holds, and how often to heartbeat to keep it.
    ttl_s: float = 0.0
    heartbeat_s: float = 0.0


class Instance(Struct, frozen=True, kw_only=True, gc=False):
    instance_id: str
    host: str
    port: int
    weight: int
    zone: str
    version: str
    metadata: dict[str, str]
    healthy: bool
    drained: bool
    inflight: int
    registered_at: datetime
    last_seen: datetime
    # extensions: the lease and the last load the instance reported.
    ttl_s: float = 15.0
    cpu: float | None = None
    mem: float | None = None
    latency_ms: float | None = None
    checks: list[CheckDefinition] = field(default_factory=list)  # extension: what it registered
    # extensions: the worst of its lease and its checks, and each check's status
    health: CheckStatus = "passing"
    check_states: list[CheckState] = field(default_factory=list)


class InstanceList(Struct, frozen=True, kw_only=True, gc=False):
    service: str
    instances: list[Instance]
    # extensions, for readers that follow events after a snapshot: the registry's boot id,
    # the sequence number of the last event already reflected here, and whether the
    # registry has run long enough to have heard from every live instance.
    epoch: str = ""
    seq: int = 0
    settled: bool = True
    next_after: str = ""  # extension: non-empty when a page was asked for and more remain


class ServiceList(Struct, frozen=True, kw_only=True, gc=False):
    services: list[str]
    epoch: str = ""  # extension
    seq: int = 0  # extension: events published so far by this registry
    settled: bool = True  # extension
    # extension (replicas): the replica that answered, and the one it believes leads
    replica: str = ""
    leader: str = ""


# "drained" is an extension: a drained instance has reported no request in flight, so it
# is safe to stop. Readers should ignore kinds they do not know.
EventKind = Literal[
    "registered", "updated", "unhealthy", "healthy", "expired", "deregistered", "drained"
]


class InstanceEvent(Struct, frozen=True, kw_only=True, gc=False):
    kind: EventKind
    service: str
    instance: Instance
    at: datetime
    # extensions: order events against a snapshot, and spot a restarted registry.
    epoch: str = ""
    seq: int = 0


# -- between registry replicas (extension) -------------------------------------------------
class ReplicaStatus(Struct, frozen=True, kw_only=True, gc=False):
    """The leader's answer on `registry.v1.replica.leader`."""

    replica: str
    epoch: str
    seq: int
    leader: bool = True


class SnapshotQuery(Struct, frozen=True, kw_only=True, gc=False):
    """A page of a replica's lease table: leases after `after` ("service/instance")."""

    after: str = ""
    limit: Annotated[int, Meta(ge=1, le=5_000)] = 1_000


class LeaseRecord(Struct, frozen=True, kw_only=True, gc=False, array_like=True):
    """One lease as a replica holds it; `age_s` is how long ago it was last heard from."""

    service: str
    instance_id: str
    host: str
    port: int
    weight: int
    zone: str
    version: str
    metadata: dict[str, str]
    ttl_s: float
    healthy: bool
    age_s: float
    registered_at: float  # unix seconds
    last_seen: float  # unix seconds
    inflight: int = 0
    cpu: float | None = None
    mem: float | None = None
    latency_ms: float | None = None
    # the change the sender holds unannounced for this instance (no leader has spoken
    # since): the replica that copies it must announce it too, if it wins the lease
    held: EventKind | None = None
    checks: list[CheckDefinition] = field(default_factory=list)  # extension
    warning_weight: int | None = None  # extension


class ReplicaSnapshot(Struct, frozen=True, kw_only=True, gc=False):
    """A page of leases, with the fleet's epoch and the last event seq they reflect."""

    replica: str
    epoch: str
    seq: int
    settled: bool
    leases: list[LeaseRecord]
    next_after: str = ""  # non-empty while more pages remain
