"""The Python SDK of Baton: keep an instance registered, and call other services.

- `ServiceAgent`: registers an instance, heartbeats its load, deregisters it on exit.
- `BalancerClient`: resolves an endpoint, and reports each call back to the balancer.
- `KvClient`: the config center's keys: get, put, delete, history, rollback, watch.
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
    TooLarge,
    Unavailable,
)
from services.sdk.agent import Load, ServiceAgent
from services.sdk.client import BalancerClient
from services.sdk.connection import connect
from services.sdk.kv import KvClient, KvWatch

__all__ = [
    "STRATEGIES",
    "BadRequest",
    "BalancerClient",
    "BatonError",
    "Endpoint",
    "KvClient",
    "KvWatch",
    "Load",
    "NoResponders",
    "NotFound",
    "RequestTimeout",
    "ServiceAgent",
    "TooLarge",
    "Unavailable",
    "connect",
]
