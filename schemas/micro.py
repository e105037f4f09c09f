"""The NATS services protocol (ADR-32, "NATS micro"): what every worker answers on
`$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`, so `nats micro ls`, nats.go's and nats-py's
service clients, and `baton status` see Baton's workers as they see any NATS service.

Field names and types are ADR-32's; times are nanoseconds, `started` is UTC ISO 8601
with microseconds and a `Z` (the form nats-py's `ServiceStats.from_dict` parses). Baton
sends every field; as a reader (`baton status`) it takes what other implementations leave
out or send as null (nats.js omits an empty `last_error`; nats.go sends null metadata).
"""

from __future__ import annotations

from typing import Any, Final

from msgspec import Struct, field

__all__ = [
    "INFO_TYPE",
    "PING_TYPE",
    "STATS_TYPE",
    "EndpointInfo",
    "EndpointStats",
    "Info",
    "Ping",
    "Stats",
]

PING_TYPE: Final = "io.nats.micro.v1.ping_response"
INFO_TYPE: Final = "io.nats.micro.v1.info_response"
STATS_TYPE: Final = "io.nats.micro.v1.stats_response"


class Ping(Struct, frozen=True, kw_only=True):
    """`$SRV.PING[.name[.id]]`: who answers. One reply per running worker process."""

    type: str = PING_TYPE
    name: str  # the worker: baton-registry, baton-balancer, baton-governor, ...
    id: str  # unique per process (a NUID), stable for the process's life
    version: str  # the package version, SemVer
    metadata: dict[str, str] | None = field(default_factory=dict)  # pid, host


class EndpointInfo(Struct, frozen=True, kw_only=True):
    name: str  # the subject's last fixed token: resolve, register, ...
    subject: str  # as subscribed: `balancer.v1.resolve.>` serves every service
    queue_group: str  # "" for a plain subscription (every replica gets every message)
    metadata: dict[str, str] | None = field(default_factory=dict)  # payload, replies


class Info(Struct, frozen=True, kw_only=True):
    """`$SRV.INFO[.name[.id]]`: what the worker serves."""

    type: str = INFO_TYPE
    name: str
    id: str
    version: str
    metadata: dict[str, str] | None = field(default_factory=dict)
    description: str = ""
    endpoints: list[EndpointInfo] = field(default_factory=list)


class EndpointStats(Struct, frozen=True, kw_only=True):
    name: str
    subject: str = ""
    queue_group: str = ""
    num_requests: int = 0  # messages received on the endpoint since the worker started
    num_errors: int = 0  # of those, answered with an error or dropped as bad
    last_error: str = ""  # "<code>:<sentence>" of the newest error; "" when none
    processing_time: int = 0  # ns in the handler, summed
    average_processing_time: int = 0  # ns, processing_time / num_requests (0 before any)
    data: Any = None  # ADR-32's optional extra statistics (none from Baton yet)


class Stats(Struct, frozen=True, kw_only=True):
    """`$SRV.STATS[.name[.id]]`: the endpoints' counts since `started`."""

    type: str = STATS_TYPE
    name: str
    id: str
    version: str
    metadata: dict[str, str] | None = field(default_factory=dict)
    started: str  # e.g. 2026-12-01T09:42:51.123456Z
    endpoints: list[EndpointStats] = field(default_factory=list)
