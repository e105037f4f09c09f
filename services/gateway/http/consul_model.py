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
collides with a user's key. Reading back, a Baton instance is:

    lease lapsed (unhealthy)            its service check critical ("TTL expired")
    drained by an operator              plus `_service_maintenance:<id>` critical
    otherwise                           its check's status (passing for NATS instances)
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import msgspec

from schemas.errors import explain
from schemas.registry import Registration
from schemas.subjects import InvalidNameError, check_name
from services.errors import BadRequest
from services.gateway.http.durations import DurationError, parse_duration

if TYPE_CHECKING:
    from schemas.registry import Instance

__all__ = [
    "DEFAULT_TTL_S",
    "STATUS_KEY",
    "CheckSpec",
    "ConsulService",
    "Status",
    "aggregated",
    "catalog_entry",
    "check_id_of",
    "checks_of",
    "health_entry",
    "node_of",
    "normalise",
    "parse_registration",
    "parse_status",
    "registration_for",
    "service_tags",
    "status_of",
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
MIN_DEREGISTER_S: Final = 60.0  # Consul's own floor for DeregisterCriticalServiceAfter
_NODE_NS: Final = uuid.UUID("6c0e2b58-4c1f-4d3a-9a5e-6b61746f6e00")
_UNSUPPORTED_CHECKS: Final = ("http", "tcp", "grpc", "script", "args", "docker", "h2ping", "udp")
_UNSUPPORTED_SERVICE: Final = {"connect": "Connect (service mesh)", "proxy": "a proxy definition"}
# The order Consul ranks check statuses in when it sums them up (Prometheus does the same).
_RANK: Final = {"maintenance": 3, "critical": 2, "warning": 1, "passing": 0}


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


_USER_MAPS: Final = frozenset({"meta", "taggedaddresses", "nodemeta"})


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
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10000:
            raise BadRequest(
                f"Weights.{name} must be an integer 0..10000 (Baton's weight), got {value!r}"
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
    if len(found) > 1:
        raise BadRequest(
            f"service {instance_id!r} has {len(found)} checks; Baton keeps one lease per "
            "instance, so register exactly one TTL check (or none)"
        )
    return found


def _check(raw: dict[str, Any], instance_id: str) -> CheckSpec:
    for kind in _UNSUPPORTED_CHECKS:
        if raw.get(kind):
            raise BadRequest(
                f"{kind.upper()} checks are not supported: Baton's gateway does not probe "
                "instances; use a TTL check and call PUT /v1/agent/check/pass/<check id>"
            )
    ttl_text = raw.get("ttl")
    if not ttl_text:
        raise BadRequest('a check needs a TTL, such as {"TTL": "10s"}; only TTL checks exist')
    try:
        ttl = parse_duration(str(ttl_text), "TTL")
    except DurationError as exc:
        raise BadRequest(str(exc)) from None
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise BadRequest(f"TTL {ttl_text!r} must be between 1s and 1h (Baton's lease limits)")
    status = parse_status(raw.get("status") or "critical")  # Consul: starts critical
    after: float | None = None
    if raw.get("deregistercriticalserviceafter"):
        try:
            after = parse_duration(
                str(raw["deregistercriticalserviceafter"]), "DeregisterCriticalServiceAfter"
            )
        except DurationError as exc:
            raise BadRequest(str(exc)) from None
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
        check=_check(checks[0], instance_id) if checks else None,
    )


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
    try:
        return msgspec.convert(raw, Registration)
    except msgspec.ValidationError as exc:
        raise BadRequest(explain(exc, msgspec.json.encode(raw), "registration")) from None


def from_instance(service: str, inst: Instance) -> ConsulService:
    """A Consul registration rebuilt from what the registry lists (another gateway made
    it, or this one restarted): enough to change its check's status."""
    passing, _, warning = inst.metadata.get(WEIGHTS_KEY, "").partition(",")
    weight_passing = int(passing) if passing.isdigit() else inst.weight
    meta = {k: v for k, v in inst.metadata.items() if not k.startswith("consul.")}
    check_id = inst.metadata.get(CHECK_KEY)
    return ConsulService(
        service=service,
        instance_id=inst.instance_id,
        host=inst.host,
        port=inst.port,
        tags=tuple(service_tags(inst)),
        meta=meta,
        zone=inst.zone,
        version=inst.version,
        weight_passing=weight_passing,
        weight_warning=int(warning) if warning.isdigit() else weight_passing,
        check=None
        if check_id is None
        else CheckSpec(
            check_id=check_id,
            name=f"Service '{inst.instance_id}' check",
            ttl_s=inst.ttl_s,
            status=status_of(inst),
        ),
    )


def parse_status(value: Any) -> Status:
    if value not in STATUSES:
        raise BadRequest(f"Status {value!r} must be one of passing, warning, critical")
    return cast("Status", value)


# -- rendering Baton's instances as Consul's ---------------------------------------------
def service_tags(inst: Instance) -> list[str]:
    joined = inst.metadata.get(TAGS_KEY, "")
    return joined.split(",") if joined else []


def status_of(inst: Instance) -> Status:
    """The status of the instance's own check (maintenance aside)."""
    if not inst.healthy:
        return "critical"
    status = inst.metadata.get(STATUS_KEY, "passing")
    return status if status in STATUSES else "passing"  # type: ignore[return-value]


def check_id_of(inst: Instance) -> str:
    return inst.metadata.get(CHECK_KEY) or f"service:{inst.instance_id}"


def _meta(inst: Instance) -> dict[str, str]:
    meta = {k: v for k, v in inst.metadata.items() if not k.startswith("consul.")}
    if inst.version:
        meta.setdefault("version", inst.version)
    if inst.zone:
        meta.setdefault("zone", inst.zone)
    return meta


def _tagged(host: str, port: int | None = None) -> dict[str, Any]:
    try:
        family = "ipv6" if ipaddress.ip_address(host).version == 6 else "ipv4"
    except ValueError:
        return {}
    if port is None:
        return {"lan": host, f"lan_{family}": host, "wan": host, f"wan_{family}": host}
    addr = {"Address": host, "Port": port}
    return {f"lan_{family}": addr, f"wan_{family}": addr}


def node_of(inst: Instance, datacenter: str) -> dict[str, Any]:
    """Baton has no nodes: each host is one, named by its address, with a stable ID
    (Traefik keys instances by Node.ID + Service.ID)."""
    return {
        "ID": str(uuid.uuid5(_NODE_NS, inst.host)),
        "Node": inst.host,
        "Address": inst.host,
        "Datacenter": datacenter,
        "TaggedAddresses": _tagged(inst.host),
        "Meta": {"baton-zone": inst.zone} if inst.zone else {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    }


def _service(inst: Instance, service: str, index: int) -> dict[str, Any]:
    passing, _, warning = inst.metadata.get(WEIGHTS_KEY, "").partition(",")
    return {
        "ID": inst.instance_id,
        "Service": service,
        "Tags": service_tags(inst),
        "Address": inst.host,
        "TaggedAddresses": _tagged(inst.host, inst.port),
        "Meta": _meta(inst),
        "Port": inst.port,
        "Weights": {
            "Passing": int(passing) if passing.isdigit() else inst.weight,
            "Warning": int(warning) if warning.isdigit() else inst.weight,
        },
        "EnableTagOverride": False,
        "Datacenter": "",
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def checks_of(inst: Instance, service: str, datacenter: str, index: int) -> list[dict[str, Any]]:
    """The node's serf check (always passing: the gateway answers), the instance's check,
    and Consul's maintenance check when an operator drained it."""
    node = inst.host
    status = status_of(inst)
    output = (
        f"TTL expired: no heartbeat or pass within {inst.ttl_s:g}s"
        if not inst.healthy
        else f"{status}: the instance's lease is alive"
    )
    common = {"Node": node, "Namespace": "", "CreateIndex": index, "ModifyIndex": index}
    checks = [
        {
            **common,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "the Baton gateway answers for this node",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
        },
        {
            **common,
            "CheckID": check_id_of(inst),
            "Name": f"Service '{inst.instance_id}' check",
            "Status": status,
            "Notes": "",
            "Output": output,
            "ServiceID": inst.instance_id,
            "ServiceName": service,
            "ServiceTags": service_tags(inst),
            "Type": "ttl",
        },
    ]
    if inst.drained:
        checks.append(
            {
                **common,
                "CheckID": f"_service_maintenance:{inst.instance_id}",
                "Name": "Service Maintenance Mode",
                "Status": "critical",
                "Notes": "drained by an operator (Baton's governor)",
                "Output": "",
                "ServiceID": inst.instance_id,
                "ServiceName": service,
                "ServiceTags": service_tags(inst),
                "Type": "maintenance",
            }
        )
    del datacenter  # Consul's checks carry no datacenter; kept for a uniform signature
    return checks


def aggregated(checks: list[dict[str, Any]]) -> str:
    """Consul's sum of statuses: maintenance > critical > warning > passing."""
    worst = "passing"
    for check in checks:
        status = (
            "maintenance"
            if check["CheckID"].startswith("_service_maintenance:")
            else check["Status"]
        )
        if _RANK.get(status, 2) > _RANK[worst]:
            worst = status
    return worst


def health_entry(inst: Instance, service: str, datacenter: str, index: int) -> dict[str, Any]:
    """One element of `/v1/health/service/<name>`."""
    return {
        "Node": node_of(inst, datacenter),
        "Service": _service(inst, service, index),
        "Checks": checks_of(inst, service, datacenter, index),
    }


def catalog_entry(inst: Instance, service: str, datacenter: str, index: int) -> dict[str, Any]:
    """One element of `/v1/catalog/service/<name>`."""
    node = node_of(inst, datacenter)
    svc = _service(inst, service, index)
    return {
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "Datacenter": datacenter,
        "TaggedAddresses": node["TaggedAddresses"],
        "NodeMeta": node["Meta"],
        "ServiceKind": "",
        "ServiceID": svc["ID"],
        "ServiceName": service,
        "ServiceTags": svc["Tags"],
        "ServiceAddress": svc["Address"],
        "ServiceTaggedAddresses": svc["TaggedAddresses"],
        "ServiceWeights": svc["Weights"],
        "ServiceMeta": svc["Meta"],
        "ServicePort": svc["Port"],
        "ServiceEnableTagOverride": False,
        "CreateIndex": index,
        "ModifyIndex": index,
    }
