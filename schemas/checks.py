"""Active health checks: what a registration asks the prober to probe, and what it found.

A check is declared in `Registration.checks` (an extension). The registry keeps it with the
instance; the prober (`python -m services.prober`) runs it and publishes every run on
`prober.v1.results.{service}`; the registry combines the results into the instance's
health; the collector records them. Consul's semantics throughout: 2xx passing, 429
warning, anything else critical; a check starts critical unless `status` says otherwise;
a timeout longer than the interval is cut to it.

`validate_checks` is the rule beyond the field types, shared by every door a check comes
in by (the registry over NATS, the gateway's Consul API): it names the field that is wrong
and how to fix it.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

from schemas.error_root import BadRequest

__all__ = [
    "CHECK_KINDS",
    "OUTPUT_LIMIT",
    "CheckDefinition",
    "CheckKind",
    "CheckResult",
    "CheckState",
    "CheckStatus",
    "ProberPresence",
    "check_host",
    "grpc_target",
    "validate_checks",
    "worst",
]

CheckKind = Literal["http", "tcp", "grpc", "ttl"]
CheckStatus = Literal["passing", "warning", "critical"]
CHECK_KINDS: Final = ("http", "tcp", "grpc", "ttl")
OUTPUT_LIMIT: Final = 4096  # bytes of a body or error kept with a result, as Consul
_RANK: Final[dict[str, int]] = {"passing": 0, "warning": 1, "critical": 2}
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Consul-style ids (`service:web-1:2`, `db.tcp`) fit: a check id is never a subject token
CheckId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}\Z")]
Interval = Annotated[float, Meta(ge=0.05, le=3600)]
Timeout = Annotated[float, Meta(gt=0, le=3600)]
Threshold = Annotated[int, Meta(ge=0, le=1000)]
HeaderName = Annotated[str, Meta(min_length=1, max_length=256)]
HeaderValues = Annotated[list[Annotated[str, Meta(max_length=4096)]], Meta(max_length=16)]
MAX_CHECKS: Final = 32


class CheckDefinition(Struct, frozen=True, kw_only=True, gc=False):
    """One check of an instance, as registered (docs/contract.md, `CheckDefinition`)."""

    check_id: CheckId
    kind: CheckKind
    # http: a URL; tcp: host:port; grpc: host:port[/service]; ttl: unused
    target: Annotated[str, Meta(max_length=2048)] = ""
    name: Annotated[str, Meta(max_length=256)] = ""
    interval_s: Interval = 10.0
    timeout_s: Timeout = 10.0
    ttl_s: Annotated[float, Meta(ge=1, le=3600)] = 15.0  # ttl checks: the lease
    method: Annotated[str, Meta(max_length=16)] = "GET"
    headers: Annotated[dict[HeaderName, HeaderValues], Meta(max_length=64)] = field(
        default_factory=dict
    )
    body: Annotated[str, Meta(max_length=65536)] = ""
    tls_skip_verify: bool = False
    grpc_use_tls: bool = False
    success_before_passing: Threshold = 0
    failures_before_critical: Threshold = 0
    deregister_critical_after_s: Annotated[float, Meta(ge=0, le=31_536_000)] = 0.0  # 0: never
    status: CheckStatus = "critical"  # the status before the first result
    notes: Annotated[str, Meta(max_length=1024)] = ""


Checks = Annotated[list[CheckDefinition], Meta(max_length=MAX_CHECKS)]


class CheckResult(Struct, frozen=True, kw_only=True, gc=False):
    """One run of a check, published on `prober.v1.results.{service}`."""

    instance_id: str
    check_id: str
    status: CheckStatus
    output: str
    at: datetime
    duration_ms: float = 0.0
    previous: CheckStatus | None = None  # the status before this run; differs: a transition
    prober: str = ""  # the replica that ran it


class CheckState(Struct, frozen=True, kw_only=True, gc=False):
    """A check's status as the registry holds it, in `Instance.check_states`."""

    check_id: str
    status: CheckStatus
    output: str = ""
    updated_at: datetime | None = None  # the result that set it; null: the initial status


class ProberPresence(Struct, frozen=True, kw_only=True, gc=False):
    """A prober replica's heartbeat on `prober.v1.presence`: the live set checks split over."""

    replica: str
    heartbeat_s: float
    leaving: bool = False  # a replica that stops says so: its checks move at once


def worst(statuses: list[str]) -> CheckStatus:
    """The worst of `statuses` (passing for none), as Consul aggregates a node's checks."""
    top = max((_RANK[s] for s in statuses), default=0)
    return ("passing", "warning", "critical")[top]


def _fail(index: int, name: str, problem: str) -> BadRequest:
    return BadRequest(f"checks[{index}].{name} {problem}")


def check_host(target: str, kind: str) -> str:
    """The host a check's target names (lower case, IPv6 without brackets)."""
    if kind == "http":
        return (urllib.parse.urlsplit(target).hostname or "").lower()
    hostport = grpc_target(target)[0] if kind == "grpc" else target
    host = hostport.rpartition(":")[0]
    return host.strip("[]").lower()


def grpc_target(target: str) -> tuple[str, str]:
    """`host:port[/service]` -> (`host:port`, service)."""
    hostport, _, service = target.partition("/")
    return hostport, service


def _same_host(a: str, b: str) -> bool:
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _check_hostport(index: int, hostport: str, kind: str) -> None:
    host, sep, port = hostport.rpartition(":")
    example = "10.0.0.5:5432" if kind == "tcp" else "10.0.0.5:50051/my.Service"
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _fail(index, "target", f"{hostport!r} is not host:port (e.g. {example})")


def _check_url(index: int, target: str) -> None:
    try:
        url = urllib.parse.urlsplit(target)
        _ = url.port
    except ValueError as exc:
        raise _fail(index, "target", f"{target!r} is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise _fail(
            index,
            "target",
            f"{target!r} is not an http:// or https:// URL with a host "
            "(e.g. http://10.0.0.5:8080/health)",
        )


def _normalize(index: int, check: CheckDefinition) -> CheckDefinition:
    changes: dict[str, object] = {}
    if check.kind == "ttl":
        return check
    if not check.target:
        shape = {"http": "a URL", "tcp": "host:port", "grpc": "host:port[/service]"}[check.kind]
        raise _fail(index, "target", f"is required for a {check.kind} check: {shape}")
    if check.kind == "http":
        _check_url(index, check.target)
        method = check.method.upper()
        if method not in HTTP_METHODS:
            raise _fail(
                index, "method", f"{check.method!r} is not one of {', '.join(sorted(HTTP_METHODS))}"
            )
        changes["method"] = method
    else:
        hostport = grpc_target(check.target)[0] if check.kind == "grpc" else check.target
        _check_hostport(index, hostport, check.kind)
    if check.timeout_s > check.interval_s:  # as Consul: a timeout never outlasts the interval
        changes["timeout_s"] = check.interval_s
    return msgspec.structs.replace(check, **changes) if changes else check


def validate_checks(
    checks: list[CheckDefinition], host: str, *, allow_any_target: bool = False
) -> list[CheckDefinition]:
    """The checks of an instance at `host`, normalized; BadRequest naming the bad field.

    Safety: a check may probe only the instance's own host (any port, path or gRPC
    service), unless the operator allows any target: a registration must not make Baton
    reach hosts the registrant cannot.
    """
    out: list[CheckDefinition] = []
    seen: set[str] = set()
    ttls = 0
    for index, check in enumerate(checks):
        if check.check_id in seen:
            raise _fail(index, "check_id", f"{check.check_id!r} is given twice; ids must differ")
        seen.add(check.check_id)
        ttls += check.kind == "ttl"
        normal = _normalize(index, check)
        if normal.kind != "ttl" and not allow_any_target:
            target_host = check_host(normal.target, normal.kind)
            if not _same_host(target_host, host):
                raise _fail(
                    index,
                    "target",
                    f"probes host {target_host!r}, not the instance's own host {host!r}: "
                    f"check {check.check_id!r} may only probe its instance's registered "
                    "address (any port, path or gRPC service); the operator may allow any "
                    "target with PROBER_ALLOW_ANY_TARGET=true",
                )
        out.append(normal)
    if ttls > 1:
        raise BadRequest("checks hold more than one ttl check; an instance has one lease")
    return out
