"""`connect()`: a nats-py client set up the way the SDK needs it on a NATS cluster.

NATS_URL (or `url`) may list several servers, comma-separated; the client fails over
between them by itself, reconnects forever (nats-py stops after 60 tries by default) and
PINGs often enough to leave a cut-off node within seconds (NATS_PING_INTERVAL_S,
NATS_MAX_OUTSTANDING_PINGS), as the workers do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.config import load_bus, parse_servers
from services.natsclient import Client

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["connect"]


async def connect(
    url: str | None = None,
    *,
    name: str = "baton-sdk",
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> Client:
    """Connect to `url` (default: NATS_URL, then nats://127.0.0.1:4222).

    Raises `services.config.SettingsError` naming a malformed server URL, before any
    attempt to connect; `options` go to nats-py's `Client.connect` and override the defaults here.
    """
    settings = load_bus(env)
    servers = parse_servers(url) if url is not None else settings.servers
    defaults: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "connect_timeout": settings.connect_timeout_s,
        "pending_size": settings.pending_bytes,
        "ping_interval": settings.ping_interval_s,
        "max_outstanding_pings": settings.max_outstanding_pings,
    }
    nc = Client()
    await nc.connect(servers, **(defaults | options))
    return nc
