"""The Python SDK of Baton: keep an instance registered, and call other services.

- `ServiceAgent`: registers an instance, heartbeats its load, deregisters it on exit.
- `BalancerClient`: resolves an endpoint, and reports each call back to the balancer.
- `connect()`: a nats-py client for either, from NATS_URL (one server or a cluster's list).

Both take a connected nats-py client (connect it with `max_reconnect_attempts=-1` so it
outlives a long outage) and raise from `services.errors`, the tree the workers answer with.
"""

from schemas.balancer import STRATEGIES, Endpoint
from services.errors import (
    BadRequest,
    BatonError,
    NoResponders,
    NotFound,
    RequestTimeout,
    Unavailable,
)
from services.sdk.agent import Load, ServiceAgent
from services.sdk.client import BalancerClient
from services.sdk.connection import connect

__all__ = [
    "STRATEGIES",
    "BadRequest",
    "BalancerClient",
    "BatonError",
    "Endpoint",
    "Load",
    "NoResponders",
    "NotFound",
    "RequestTimeout",
    "ServiceAgent",
    "Unavailable",
    "connect",
]
