"""Constrained field types shared by the wire messages, each with the rule a person reads.

msgspec checks the constraints in C while decoding; `RULES` turns a failure into the
contract's sentence ("port must be 1..65535, got 70000") in `schemas.errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final

from msgspec import Meta

from schemas.subjects import NAME_RULE

# Patterns end in `\Z`, not `$`: msgspec searches with Python's re, where `$` also matches
# before a final newline, so "web-1\n" would pass as a name.
NAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}\Z"

ServiceName = Annotated[str, Meta(pattern=NAME_PATTERN)]
InstanceId = Annotated[str, Meta(pattern=NAME_PATTERN)]
Host = Annotated[str, Meta(min_length=1, max_length=253, pattern=r"^[^\s/]+\Z")]
Port = Annotated[int, Meta(ge=1, le=65535)]
Weight = Annotated[int, Meta(ge=0, le=10000)]
Zone = Annotated[str, Meta(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*\Z")]
Version = Annotated[str, Meta(max_length=64)]
MetaKey = Annotated[str, Meta(min_length=1, max_length=128)]
MetaValue = Annotated[str, Meta(max_length=1024)]
Metadata = Annotated[dict[MetaKey, MetaValue], Meta(max_length=64)]
TtlSeconds = Annotated[float, Meta(ge=1, le=3600)]
Share = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=0)]
Millis = Annotated[float, Meta(ge=0)]
Key = Annotated[str, Meta(max_length=1024)]
InstanceIds = Annotated[list[InstanceId], Meta(max_length=1024)]
Actor = Annotated[str, Meta(min_length=1, max_length=128)]
Reason = Annotated[str, Meta(max_length=1024)]
Revision = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0, le=3600)]

# One sentence per field name: what a valid value is. Field names mean the same thing in
# every message, so one table serves them all.
RULES: Final[dict[str, str]] = {
    "service": f"service must be {NAME_RULE} and equal the service in the subject",
    "instance_id": f"instance_id must be {NAME_RULE}",
    "host": "host must be a hostname or IP address of 1 to 253 characters, without spaces",
    "port": "port must be 1..65535",
    "weight": "weight must be an integer 0..10000 (0 = no traffic)",
    "zone": "zone must be at most 64 characters of A-Z a-z 0-9 _ . : -",
    "version": "version must be a string of at most 64 characters",
    "metadata": "metadata must be an object of at most 64 string keys (1..128 characters) "
    "to string values (at most 1024 characters)",
    "ttl_s": "ttl_s must be a number of seconds 1..3600",
    "inflight": "inflight must be an integer >= 0",
    "cpu": "cpu must be a number 0..1",
    "mem": "mem must be a number 0..1",
    "latency_ms": "latency_ms must be a number >= 0",
    "ok": "ok must be true or false",
    "key": "key must be a string of at most 1024 characters",
    "exclude": f"exclude must be a list of at most 1024 instance ids ({NAME_RULE})",
    "strategy": "strategy must be a strategy name such as round_robin",
    "pick": "pick must be the string the balancer returned in the endpoint",
    "after": "after must be an instance id (the next_after of the previous page)",
    "limit": "limit must be an integer 0..100000 (0 = all)",
    "actor": "actor is who makes the change: a string of 1 to 128 characters",
    "reason": "reason must be a string of at most 1024 characters",
    "expected_revision": "expected_revision must be an integer >= 0 (the revision you read)",
    "protect_threshold": "protect_threshold must be a number 0..1",
    "instances": f"instances must be an object of instance id ({NAME_RULE}) to an override "
    "{weight, drained, port, metadata}, or to null to drop all its overrides",
    "drained": "drained must be true or false (or null to drop the override)",
    "delete": "delete must be true or false",
    "warmup_s": "warmup_s must be a number of seconds 0..3600",
    "outlier": "outlier must be an object of enabled, consecutive_failures, interval_s, "
    "base_ejection_s, max_ejection_s, max_ejected_percent, success_rate, probation",
    "enabled": "enabled must be true or false",
    "consecutive_failures": "consecutive_failures must be an integer 1..1000",
    "interval_s": "interval_s must be a number of seconds 0.05..3600",
    "base_ejection_s": "base_ejection_s must be a number of seconds 0.05..86400",
    "max_ejection_s": "max_ejection_s must be a number of seconds 0.05..86400, "
    "at least base_ejection_s",
    "max_ejected_percent": "max_ejected_percent must be a number 0..100 "
    "(at least one instance may always be ejected)",
    "success_rate": "success_rate must be true or false",
    "probation": "probation must be true or false",
    "reports": "reports must be a list of at most 10000 call reports",
    "to_revision": "to_revision must be an integer >= 0: a revision listed by governor.v1.history",
    "since_revision": "since_revision must be an integer >= 0 (0 = from the oldest kept)",
    "warning_weight": "warning_weight must be an integer 0..10000, or null for the weight",
    "checks": "checks must be a list of at most 32 check objects (docs/prober.md)",
    "check_id": "check_id must be 1 to 128 characters of A-Z a-z 0-9 _ . : -, unique within "
    "the instance",
    "kind": "kind must be one of http, tcp, grpc, ttl (script checks are refused: running "
    "a command a registration names is remote code execution)",
    "target": "target must be a string of at most 2048 characters: a URL (http), host:port "
    "(tcp) or host:port[/service] (grpc)",
    "name": "name must be a string of at most 256 characters",
    "timeout_s": "timeout_s must be a positive number of seconds up to 3600",
    "method": "method must be an HTTP method such as GET",
    "headers": "headers must be an object of at most 64 header names to lists of at most "
    "16 strings",
    "body": "body must be a string of at most 65536 characters",
    "tls_skip_verify": "tls_skip_verify must be true or false",
    "grpc_use_tls": "grpc_use_tls must be true or false",
    "success_before_passing": "success_before_passing must be an integer 0..1000",
    "failures_before_critical": "failures_before_critical must be an integer 0..1000",
    "deregister_critical_after_s": "deregister_critical_after_s must be a number of seconds "
    "0..31536000 (0 = never)",
    "status": "status must be one of passing, warning, critical",
    "notes": "notes must be a string of at most 1024 characters",
    "since": "since must be an RFC 3339 time with its offset, e.g. 2026-01-02T03:04:05Z",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
