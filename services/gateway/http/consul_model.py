"""Consul's service model onto Baton's, and back: pure functions, no bus, no clock.

    Consul                              Baton
    Service.Name                        service name (the subject's `{service}`)
    Service.ID (default: Name)          instance_id
    Service.Address (default: caller)   host
    Service.Port                        port
    Weights.Passing / Weights.Warning   weight while passing / warning; critical = weight 0
    Locality.Zone, else Meta["zone"]    zone
    Meta["version"]                     version
    Meta                                metadata (as given)
    Tags                                metadata["consul.tags"] (comma-joined)
    TTL check's TTL                     ttl_s: a pass is a heartbeat; silence makes the
                                        instance unhealthy after ttl_s, expired after 2 x
    TTL check's status                  metadata["consul.status"] (absent = passing)
    Check.CheckID (default service:ID)  metadata["consul.check"]

The check status lives in the registry, in the instance's metadata, so that every gateway
renders the same checks. Consul's own meta keys cannot hold a dot, so `consul.*` never
collides with a user's key. The way back, Baton's instances as Consul's: consul_render.py.
"""

from __future__ import annotations

from typing import Any, Final, Literal, cast, get_args

import msgspec

from schemas.checks import CheckDefinition
from schemas.errors import explain
from schemas.registry import Registration
from schemas.subjects import InvalidNameError, check_name
from services.errors import BadRequest
from services.gateway.http.consul_checks import (
    MIN_DEREGISTER_S,
    active_check,
    is_active,
    refuse_unsupported,
)
from services.gateway.http.params import parse_duration

__all__ = [
    "CHECK_KEY",
    "DEFAULT_TTL_S",
    "MAX_WEIGHT",
    "STATUSES",
    "STATUS_KEY",
    "TAGS_KEY",
    "WEIGHTS_KEY",
    "CheckSpec",
    "ConsulService",
    "Status",
    "normalise",
    "parse_catalog_registration",
    "parse_registration",
    "parse_status",
    "registration_for",
]

Status = Literal["passing", "warning", "critical"]
STATUSES: Final = get_args(Status)
TAGS_KEY: Final = "consul.tags"
STATUS_KEY: Final = "consul.status"
CHECK_KEY: Final = "consul.check"
WEIGHTS_KEY: Final = "consul.weights"
# a service registered without a check is kept alive by the gateway that holds it,
# as a Consul agent keeps its own services: this is that lease
DEFAULT_TTL_S: Final = 15.0
MIN_TTL_S: Final = 1.0
MAX_TTL_S: Final = 3600.0
MAX_WEIGHT: Final = 10_000  # Baton's weight (schemas/fields.py Weight)
_UNSUPPORTED_SERVICE: Final = {"connect": "Connect (service mesh)", "proxy": "a proxy definition"}


# -- reading a registration --------------------------------------------------------------
def normalise(value: Any, *, keep: frozenset[str] = frozenset()) -> Any:
    """Keys folded as Consul folds them: any capitalisation, snake_case or not.

    The values under the keys in `keep` (user maps such as Meta) keep their own keys.
    """
    if isinstance(value, list):
        return [normalise(v, keep=keep) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        folded = str(key).replace("_", "").replace("-", "").lower()
        out[folded] = item if folded in keep else normalise(item, keep=keep)
    return out


_USER_MAPS: Final = frozenset({"meta", "taggedaddresses", "nodemeta", "header"})


class CheckSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The one TTL check of a Consul registration, as the gateway keeps it."""

    check_id: str
    name: str
    ttl_s: float
    status: Status
    notes: str = ""
    deregister_after_s: float | None = None


class ConsulService(msgspec.Struct, frozen=True, kw_only=True):
    """A Consul registration, read and checked: what the gateway registers in Baton."""

    service: str
    instance_id: str
    host: str
    port: int
    tags: tuple[str, ...]
    meta: dict[str, str]
    zone: str
    version: str
    weight_passing: int
    weight_warning: int
    check: CheckSpec | None
    # HTTP, TCP and gRPC checks, for the prober (services/gateway/http/consul_checks.py)
    active: tuple[CheckDefinition, ...] = ()


def _text(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {msgspec.json.encode(value).decode()}")
    return value


def _weights(body: dict[str, Any]) -> tuple[int, int]:
    weights: Any = body.get("weights") or {}
    if not isinstance(weights, dict):
        raise BadRequest("Weights must be an object {Passing, Warning} of integers")
    passing: Any = weights.get("passing", 100)
    warning: Any = weights.get("warning", passing)
    for name, value in (("Passing", passing), ("Warning", warning)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WEIGHT:
            raise BadRequest(
                f"Weights.{name} must be an integer 0..{MAX_WEIGHT} (Baton's weight), got {value!r}"
            )
    return passing, warning


def _checks(body: dict[str, Any], instance_id: str) -> list[dict[str, Any]]:
    found: list[Any] = []
    if body.get("check"):
        found.append(body["check"])
    checks = body.get("checks") or []
    if not isinstance(checks, list):
        raise BadRequest("Checks must be a list of check objects")
    found.extend(checks)
    if not all(isinstance(c, dict) for c in found):
        raise BadRequest('each check must be an object such as {"TTL": "10s"}')
    for n, raw in enumerate(found):
        refuse_unsupported(raw, "Check" if len(found) == 1 else f"Checks[{n}]")
    ttls = [c for c in found if not is_active(c)]
    if len(ttls) > 1:
        raise BadRequest(
            f"service {instance_id!r} has {len(ttls)} TTL checks; Baton keeps one lease per "
            "instance, so register one TTL check (or none) beside any HTTP, TCP, gRPC checks"
        )
    return found


def _active(found: list[dict[str, Any]], instance_id: str) -> tuple[CheckDefinition, ...]:
    """The HTTP, TCP and gRPC checks, with Consul's default ids (`service:<id>` for one
    check, `service:<id>:<n>` for several)."""
    out: list[CheckDefinition] = []
    for n, raw in enumerate(found, start=1):
        where = "Check" if len(found) == 1 else f"Checks[{n - 1}]"
        if is_active(raw):
            default = f"service:{instance_id}" if len(found) == 1 else f"service:{instance_id}:{n}"
            out.append(active_check(raw, default_id=default, where=where))
    return tuple(out)


def _duration_text(value: Any, name: str) -> str:
    if not isinstance(value, str):  # Consul's JSON takes a duration as a string only
        raise BadRequest(
            f'{name} must be a duration string such as "10s", got '
            f"{msgspec.json.encode(value).decode()[:64]}"
        )
    return value


def _check(raw: dict[str, Any], instance_id: str) -> CheckSpec:
    ttl_text = raw.get("ttl")
    if not ttl_text:
        raise BadRequest(
            'a check needs a TTL, HTTP, TCP or GRPC, such as {"TTL": "10s"} or '
            '{"HTTP": "http://10.0.0.5:8080/health", "Interval": "10s"}'
        )
    ttl = parse_duration(_duration_text(ttl_text, "TTL"), "TTL")
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise BadRequest(f"TTL {ttl_text!r} must be between 1s and 1h (Baton's lease limits)")
    status = parse_status(raw.get("status") or "critical")  # Consul: starts critical
    after: float | None = None
    if raw.get("deregistercriticalserviceafter"):
        name = "DeregisterCriticalServiceAfter"
        after = parse_duration(_duration_text(raw["deregistercriticalserviceafter"], name), name)
        after = max(after, MIN_DEREGISTER_S)
    check_id = str(raw.get("checkid") or raw.get("id") or f"service:{instance_id}")
    return CheckSpec(
        check_id=check_id,
        name=str(raw.get("name") or f"Service '{instance_id}' check"),
        ttl_s=ttl,
        status=status,
        notes=str(raw.get("notes") or ""),
        deregister_after_s=after,
    )


def _tags_and_meta(raw: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("Tags must be a list of strings")
    if any("," in t or not t for t in tags):
        raise BadRequest("a tag must be non-empty and hold no ',' (Baton stores tags joined)")
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise BadRequest("Meta must be an object of string keys to string values")
    if any("." in k for k in meta):
        raise BadRequest("a Meta key may hold only A-Z a-z 0-9 _ - (as in Consul)")
    return tags, {str(k): v for k, v in meta.items()}


def parse_registration(body: Any, *, caller: str) -> ConsulService:
    """The body of `PUT /v1/agent/service/register`; `caller` is the peer's address, the
    host of a service registered without `Address` (Consul would use its node's)."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"Name": "web", "Port": 80}')
    raw = normalise(body, keep=_USER_MAPS)
    for key, what in _UNSUPPORTED_SERVICE.items():
        if raw.get(key):
            raise BadRequest(f"{what} is not supported by Baton's gateway; leave {key} out")
    if raw.get("kind"):
        raise BadRequest(f"Kind {raw['kind']!r} is not supported; register a plain service")
    name = _text(raw, "name", "Name")
    if not name:
        raise BadRequest('Name is required: {"Name": "web", "Port": 8080}')
    instance_id = _text(raw, "id", "ID") or name
    try:
        check_name(name, "Name (the service name)")
        check_name(instance_id, "ID (the instance id)")
    except InvalidNameError as exc:
        raise BadRequest(str(exc)) from None
    tags, meta = _tags_and_meta(raw)
    locality = raw.get("locality") or {}
    zone = str(locality.get("zone") or "") if isinstance(locality, dict) else ""
    port = raw.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise BadRequest(
            f"Port must be 1..65535, got {port!r}: Baton resolves to host:port, so a "
            "service needs its port"
        )
    passing, warning = _weights(raw)
    checks = _checks(raw, instance_id)
    ttls = [c for c in checks if not is_active(c)]
    return ConsulService(
        service=name,
        instance_id=instance_id,
        host=_text(raw, "address", "Address") or caller,
        port=port,
        tags=tuple(tags),
        meta=meta,
        zone=zone or meta.get("zone", ""),
        version=meta.get("version", ""),
        weight_passing=passing,
        weight_warning=warning,
        check=_check(ttls[0], instance_id) if ttls else None,
        active=_active(checks, instance_id),
    )


def parse_catalog_registration(body: Any, query_meta: list[str] | None = None) -> ConsulService:
    """The body of `PUT /v1/catalog/register` for an external service (consul-esm's shape):
    `NodeMeta {"external-node": "true"}`, a `Service`, and `Checks` whose `Definition`
    holds `HTTP` or `TCP` with `Interval`/`Timeout`. The prober runs those checks, so the
    instance needs no agent and no heartbeat. `query_meta` holds `?node-meta=key:value`
    pairs, where py-consul puts NodeMeta."""
    if not isinstance(body, dict):
        raise BadRequest(
            "the body must be a JSON object {Node, Address, NodeMeta, Service, Checks}"
        )
    raw = normalise(body, keep=_USER_MAPS)
    node_meta = raw.get("nodemeta") or {}
    if isinstance(node_meta, dict):
        node_meta = {**dict(p.partition(":")[::2] for p in query_meta or []), **node_meta}
    if not isinstance(node_meta, dict) or node_meta.get("external-node") != "true":
        raise BadRequest(
            "only external services are registered in the catalog: set NodeMeta "
            '{"external-node": "true"}; register a local service with PUT '
            "/v1/agent/service/register"
        )
    service = raw.get("service")
    if not isinstance(service, dict):
        raise BadRequest('Service is required: {"Service": "db", "ID": "db-1", "Port": 5432}')
    address = _text(raw, "address", "Address")
    checks_in = raw.get("checks") or ([raw["check"]] if raw.get("check") else [])
    if not isinstance(checks_in, list) or not all(isinstance(c, dict) for c in checks_in):
        raise BadRequest("Checks must be a list of check objects with a Definition")
    checks: list[dict[str, Any]] = []
    for n, check in enumerate(checks_in):
        definition = check.get("definition") or {}
        if not isinstance(definition, dict) or not is_active(definition):
            raise BadRequest(
                f"Checks[{n}].Definition must hold HTTP or TCP with an Interval, such as "
                '{"TCP": "10.0.0.5:5432", "Interval": "10s"}: Baton probes external services'
            )
        own = {k: check[k] for k in ("checkid", "name", "status", "notes") if k in check}
        checks.append({**definition, **own})
    registration = {
        "name": service.get("service"),
        "id": service.get("id"),
        "address": service.get("address") or address,
        "port": service.get("port", 0),
        "tags": service.get("tags"),
        "meta": service.get("meta"),
        "weights": service.get("weights"),
        "checks": checks,
    }
    return parse_registration(registration, caller=address or "127.0.0.1")


def registration_for(svc: ConsulService, status: Status) -> Registration:
    """The Baton registration of `svc` while its check is `status` (checked as on NATS)."""
    weight = {"passing": svc.weight_passing, "warning": svc.weight_warning}.get(status, 0)
    metadata = dict(svc.meta)
    if svc.tags:
        metadata[TAGS_KEY] = ",".join(svc.tags)
    metadata[WEIGHTS_KEY] = f"{svc.weight_passing},{svc.weight_warning}"
    if svc.check is not None:
        metadata[STATUS_KEY] = status
        metadata[CHECK_KEY] = svc.check.check_id
    raw = {
        "instance_id": svc.instance_id,
        "host": svc.host,
        "port": svc.port,
        "weight": weight,
        "zone": svc.zone,
        "version": svc.version,
        "metadata": metadata,
        "ttl_s": svc.check.ttl_s if svc.check else DEFAULT_TTL_S,
    }
    if svc.active:  # the prober runs them; a TTL check beside them stays the lease
        checks = [msgspec.to_builtins(c) for c in svc.active]
        if svc.check is not None:
            ttl = {"check_id": svc.check.check_id, "kind": "ttl", "ttl_s": svc.check.ttl_s}
            checks.append(ttl)
        raw["checks"] = checks
        raw["warning_weight"] = svc.weight_warning
    try:
        return msgspec.convert(raw, Registration)
    except msgspec.ValidationError as exc:
        raise BadRequest(explain(exc, msgspec.json.encode(raw), "registration")) from None


def parse_status(value: Any) -> Status:
    if value not in STATUSES:
        raise BadRequest(f"Status {value!r} must be one of passing, warning, critical")
    return cast("Status", value)
