"""The gateway's settings: GATEWAY_<FIELD> in the environment, e.g. GATEWAY_DNS_PORT=8600."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

__all__ = ["GatewaySettings"]

Port = Annotated[int, Meta(ge=-1, le=65535)]  # 0 turns that listener off; -1: any free port


class GatewaySettings(Struct, frozen=True, kw_only=True):
    """Environment: GATEWAY_<FIELD>, e.g. GATEWAY_DNS_PORT=8600."""

    # the address both listeners bind (loopback by default, as Consul's agent)
    bind: str = "127.0.0.1"
    # DNS over UDP and TCP on this port; 0 = no DNS
    dns_port: Port = 8600
    # HTTP (Baton's API and the Consul subset) on this port; 0 = no HTTP
    http_port: Port = 8500
    # names are answered under this domain: <service>.service.<domain>
    domain: Annotated[str, Meta(pattern=r"^[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.?$")] = (
        "baton"
    )
    # TTL of every DNS record (0: clients ask again each time, as Consul's default)
    dns_ttl_s: Annotated[int, Meta(ge=0, le=86400)] = 0
    # how long a DNS query waits for the balancer's pick before answering in stable order
    pick_timeout_s: Annotated[float, Meta(gt=0, le=5)] = 0.25
    # deadline of each request to the registry while reading a snapshot
    registry_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    # a full snapshot this often even when no event was missed (anti-entropy)
    resync_s: Annotated[float, Meta(gt=0)] = 300.0
    # at start, wait at most this long for the operators' config before serving
    config_wait_s: Annotated[float, Meta(ge=0)] = 5.0

    # -- HTTP (services/gateway/http/) -------------------------------------------------
    # a file of token -> role and services; without it, writes bind to loopback only
    tokens: str = ""
    # deadline of each NATS request made for an HTTP request (a 504 after it)
    http_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 2.0
    # what the Consul API reports as the datacenter (Prometheus passes it back as dc=)
    datacenter: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")] = "baton"
    # the console links each service to its Grafana dashboard under this address
    # (e.g. http://localhost:3000); empty: no link
    grafana_url: Annotated[str, Meta(pattern=r"^(https?://[^\s\"'<>]+)?\Z")] = ""
