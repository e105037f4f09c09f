"""Wire messages and subjects of Baton's public NATS contract (v1)."""

from schemas.balancer import STRATEGIES, CallReport, Endpoint, ResolveRequest
from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorReply
from schemas.registry import (
    Ack,
    Deregistration,
    Empty,
    Heartbeat,
    Instance,
    InstanceEvent,
    InstanceList,
    Registration,
    ServiceList,
)

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "STRATEGIES",
    "Ack",
    "CallReport",
    "Deregistration",
    "Empty",
    "Endpoint",
    "ErrorReply",
    "Heartbeat",
    "Instance",
    "InstanceEvent",
    "InstanceList",
    "Registration",
    "ResolveRequest",
    "ServiceList",
]
