"""Baton's instances as Consul's: catalog and health entries, checks, nodes (pure).

    lease lapsed (unhealthy)            its service check critical ("TTL expired")
    drained by an operator              plus `_service_maintenance:<id>` critical
    ejected by the balancers            plus `baton:outlier:<id>` critical (why, until when)
    otherwise                           its check's status (passing for NATS instances)

So `?passing` leaves out drained and ejected instances, as DNS does; the catalog lists
every registered one, whatever its checks (as Consul's catalog does).

Baton has no nodes: each host is one, named by its address. The registration a gateway
rebuilds from the listing (`from_instance`) is how any gateway changes a check's status.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from services.errors import BadRequest
from services.gateway.http.consul_model import (
    CHECK_KEY,
    MAX_WEIGHT,
    STATUS_KEY,
    STATUSES,
    TAGS_KEY,
    WEIGHTS_KEY,
    CheckSpec,
    ConsulService,
)
from services.gateway.http.params import parse_size

if TYPE_CHECKING:
    from schemas.balancer import Ejection
    from schemas.registry import Instance
    from services.gateway.http.consul_model import Status

__all__ = [
    "OUTLIER_CHECK",
    "active_checks",
    "aggregated",
    "catalog_entry",
    "check_id_of",
    "checks_of",
    "from_instance",
    "health_entry",
    "node_of",
    "outlier_check_id",
    "service_tags",
    "status_of",
]

OUTLIER_CHECK: Final = "baton:outlier"  # the check's name; its id adds `:<instance id>`
_NODE_NS: Final = uuid.UUID("6c0e2b58-4c1f-4d3a-9a5e-6b61746f6e00")
# The order Consul ranks check statuses in when it sums them up (Prometheus does the same).
_RANK: Final = {"maintenance": 3, "critical": 2, "warning": 1, "passing": 0}


def _weight(text: str, default: int) -> int:
    """A weight the Consul API kept in an instance's metadata; `default` where another
    writer (any NATS client may set metadata) left something else there."""
    try:
        return parse_size(text, "weight", maximum=MAX_WEIGHT)
    except BadRequest:
        return default


def from_instance(service: str, inst: Instance) -> ConsulService:
    """A Consul registration rebuilt from what the registry lists (another gateway made
    it, or this one restarted): enough to change its check's status."""
    passing, _, warning = inst.metadata.get(WEIGHTS_KEY, "").partition(",")
    weight_passing = _weight(passing, inst.weight)
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
        weight_warning=_weight(warning, weight_passing),
        active=tuple(c for c in inst.checks if c.kind != "ttl"),
        check=None
        if check_id is None
        else CheckSpec(
            check_id=check_id,
            name=f"Service '{inst.instance_id}' check",
            ttl_s=inst.ttl_s,
            status=status_of(inst),
        ),
    )


def service_tags(inst: Instance) -> list[str]:
    joined = inst.metadata.get(TAGS_KEY, "")
    return joined.split(",") if joined else []


def lease_alive(inst: Instance) -> bool:
    """Whether its lease holds: it is not critical, or only its active checks make it so."""
    return inst.healthy or any(s.status == "critical" for s in inst.check_states)


def status_of(inst: Instance) -> Status:
    """The status of the instance's own check (maintenance aside)."""
    if not lease_alive(inst):
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
            "Passing": _weight(passing, inst.weight),
            "Warning": _weight(warning, inst.weight),
        },
        "EnableTagOverride": False,
        "Datacenter": "",
        "CreateIndex": index,
        "ModifyIndex": index,
    }


def outlier_check_id(instance_id: str) -> str:
    return f"{OUTLIER_CHECK}:{instance_id}"


def _when(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def checks_of(
    inst: Instance,
    service: str,
    datacenter: str,
    index: int,
    ejection: Ejection | None = None,
) -> list[dict[str, Any]]:
    """The node's serf check (always passing: the gateway answers), the instance's check,
    Consul's maintenance check when an operator drained it, and a critical
    `baton:outlier` check while the balancers have it ejected (`ejection`)."""
    node = inst.host
    status = status_of(inst)
    output = (
        f"TTL expired: no heartbeat or pass within {inst.ttl_s:g}s"
        if not lease_alive(inst)
        else f"{status}: the instance's lease is alive"
    )
    common = {"Node": node, "Namespace": "", "CreateIndex": index, "ModifyIndex": index}
    # the lease's own check: a TTL check, or the lease of an instance with none probed
    lease_check = CHECK_KEY in inst.metadata or not any(c.kind != "ttl" for c in inst.checks)
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
    ]
    if lease_check:
        checks.append(
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
            }
        )
    checks.extend(active_checks(inst, service, common))
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
    if ejection is not None:
        checks.append(
            {
                **common,
                "CheckID": outlier_check_id(inst.instance_id),
                "Name": OUTLIER_CHECK,
                "Status": "critical",
                "Notes": "ejected as an outlier by Baton's balancer (outlier ejection)",
                "Output": (
                    f"ejected until {_when(ejection.until)} "
                    f"(since {_when(ejection.since)}, ejection {ejection.times} in a row): "
                    f"{ejection.reason}"
                ),
                "ServiceID": inst.instance_id,
                "ServiceName": service,
                "ServiceTags": service_tags(inst),
                "Type": "baton-outlier",
            }
        )
    del datacenter  # Consul's checks carry no datacenter; kept for a uniform signature
    return checks


def active_checks(inst: Instance, service: str, common: dict[str, Any]) -> list[dict[str, Any]]:
    """The instance's HTTP, TCP and gRPC checks, as the prober last found them."""
    states = {s.check_id: s for s in inst.check_states}
    out: list[dict[str, Any]] = []
    for check in inst.checks:
        if check.kind == "ttl":
            continue
        state = states.get(check.check_id)
        out.append(
            {
                **common,
                "CheckID": check.check_id,
                "Name": check.name or f"Service '{inst.instance_id}' check",
                "Status": state.status if state is not None else check.status,
                "Notes": check.notes,
                "Output": state.output if state is not None else "",
                "ServiceID": inst.instance_id,
                "ServiceName": service,
                "ServiceTags": service_tags(inst),
                "Type": check.kind,
                "Interval": f"{check.interval_s:g}s",
                "Timeout": f"{check.timeout_s:g}s",
            }
        )
    return out


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


def health_entry(
    inst: Instance,
    service: str,
    datacenter: str,
    index: int,
    ejection: Ejection | None = None,
) -> dict[str, Any]:
    """One element of `/v1/health/service/<name>`."""
    return {
        "Node": node_of(inst, datacenter),
        "Service": _service(inst, service, index),
        "Checks": checks_of(inst, service, datacenter, index, ejection),
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
