"""Consul's active checks (HTTP, TCP, gRPC) onto Baton's, for the prober to run (pure).

    Consul                              Baton (schemas/checks.py CheckDefinition)
    HTTP / TCP / GRPC (+ GRPCUseTLS)    kind http / tcp / grpc, target
    Interval, Timeout                   interval_s, timeout_s (cut to the interval)
    Method, Header, Body, TLSSkipVerify method, headers, body, tls_skip_verify
    SuccessBeforePassing                success_before_passing
    FailuresBeforeCritical              failures_before_critical
    DeregisterCriticalServiceAfter      deregister_critical_after_s (Consul's 1 min floor)
    Status, Notes, CheckID, Name        status, notes, check_id, name

Keys arrive folded (consul_model.normalise: `tlsskipverify`). Refused, with the reason:
script checks (`Args`, `Script`: remote code execution, as Consul's own default), Docker,
H2PING, UDP, OS service and alias checks (nothing here runs them). A TTL check stays the
gateway's lease (consul_model.py).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from schemas.checks import CheckDefinition
from schemas.errors import explain
from services.errors import BadRequest
from services.gateway.http.params import parse_duration

__all__ = [
    "ACTIVE_KINDS",
    "MIN_DEREGISTER_S",
    "REFUSED",
    "active_check",
    "is_active",
    "refuse_unsupported",
]

ACTIVE_KINDS: Final = ("http", "tcp", "grpc")
MIN_DEREGISTER_S: Final = 60.0  # Consul's floor for DeregisterCriticalServiceAfter
REFUSED: Final[dict[str, str]] = {
    "args": "script checks are refused: running a command a registration names is remote "
    "code execution (Consul disables them by default too)",
    "script": "script checks are refused: running a command a registration names is remote "
    "code execution (Consul disables them by default too)",
    "dockercontainerid": "Docker checks are not supported: the prober runs no containers",
    "h2ping": "H2PING checks are not supported; use an HTTP or gRPC check",
    "udp": "UDP checks are not supported; use a TCP check",
    "osservice": "OS service checks are not supported: the prober runs on no instance's host",
    "aliasservice": "alias checks are not supported: an instance's health is its own checks",
    "aliasnode": "alias checks are not supported: an instance's health is its own checks",
}


def is_active(raw: dict[str, Any]) -> bool:
    return any(raw.get(kind) for kind in ACTIVE_KINDS)


def refuse_unsupported(raw: dict[str, Any], where: str) -> None:
    for key, why in REFUSED.items():
        if raw.get(key):
            raise BadRequest(f"{where}: {why}")


def _duration(raw: dict[str, Any], key: str, name: str, where: str) -> float | None:
    value = raw.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f'{where}.{name} must be a duration string such as "10s", got {value!r}')
    return parse_duration(value, f"{where}.{name}")


def _headers(raw: dict[str, Any], where: str) -> dict[str, list[str]]:
    headers = raw.get("header") or {}
    ok = isinstance(headers, dict) and all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in headers.values()
    )
    if not ok:
        raise BadRequest(
            f"{where}.Header must be an object of header names to lists of strings, such as "
            '{"Authorization": ["Bearer x"]}'
        )
    return {str(k): list(v) for k, v in headers.items()}


def active_check(raw: dict[str, Any], *, default_id: str, where: str) -> CheckDefinition:
    """One Consul HTTP/TCP/gRPC check as Baton's; BadRequest naming the Consul field."""
    refuse_unsupported(raw, where)
    kind = next(k for k in ACTIVE_KINDS if raw.get(k))
    target = raw[kind]
    if not isinstance(target, str):
        raise BadRequest(f"{where}.{kind.upper()} must be a string, got {target!r}")
    interval = _duration(raw, "interval", "Interval", where)
    if interval is None:
        raise BadRequest(f'{where}.Interval is required for an {kind.upper()} check, e.g. "10s"')
    fields: dict[str, Any] = {
        "check_id": str(raw.get("checkid") or raw.get("id") or default_id),
        "kind": kind,
        "target": target,
        "name": str(raw.get("name") or ""),
        "interval_s": interval,
        "notes": str(raw.get("notes") or ""),
        "status": raw.get("status") or "critical",
    }
    timeout = _duration(raw, "timeout", "Timeout", where)
    if timeout is not None:
        fields["timeout_s"] = timeout
    after = _duration(
        raw, "deregistercriticalserviceafter", "DeregisterCriticalServiceAfter", where
    )
    if after is not None:
        fields["deregister_critical_after_s"] = max(after, MIN_DEREGISTER_S)
    if kind == "http":
        fields["method"] = str(raw.get("method") or "GET")
        fields["headers"] = _headers(raw, where)
        fields["body"] = raw.get("body") or ""
        fields["tls_skip_verify"] = bool(raw.get("tlsskipverify"))
    if kind == "grpc":
        fields["grpc_use_tls"] = bool(raw.get("grpcusetls"))
    for consul, ours in (
        ("successbeforepassing", "success_before_passing"),
        ("failuresbeforecritical", "failures_before_critical"),
    ):
        if raw.get(consul) is not None:
            fields[ours] = raw[consul]
    try:
        return msgspec.convert(fields, CheckDefinition)
    except msgspec.ValidationError as exc:
        sentence = explain(exc, msgspec.json.encode(fields), "check")
        raise BadRequest(f"{where}: {sentence}") from None
