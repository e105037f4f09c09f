"""Prometheus' HTTP service discovery (`http_sd_configs`) from the gateway's view.

Prometheus builds that lack Consul discovery (Debian's, which compiles it out) still
have HTTP discovery. Every instance is one target group, labelled as Consul discovery
labels its targets, with `__meta_baton_` in place of `__meta_consul_`:

    __meta_baton_service, __meta_baton_service_id, __meta_baton_zone, __meta_baton_version,
    __meta_baton_health (passing, warning, critical or maintenance, as Consul sums checks;
        critical while the balancers have the instance ejected as an outlier),
    __meta_baton_tags (",a,b," as Consul's, so a regex `.*,a,.*` matches a tag),
    __meta_baton_metadata_<key> for each metadata key (characters outside [A-Za-z0-9_] as _)

`?service=` (repeatable) limits the services, `?passing` keeps passing instances only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from services.errors import Unavailable
from services.gateway.http.consul_render import aggregated, checks_of, service_tags
from services.gateway.http.replies import json

if TYPE_CHECKING:
    from schemas.registry import Instance
    from services.view import RegistryView

__all__ = ["PrometheusSd", "target_group"]

_LABEL: Final = re.compile(r"[^A-Za-z0-9_]")


def target_group(inst: Instance, service: str, health: str) -> dict[str, Any]:
    host = f"[{inst.host}]" if ":" in inst.host else inst.host
    tags = service_tags(inst)
    labels = {
        "__meta_baton_service": service,
        "__meta_baton_service_id": inst.instance_id,
        "__meta_baton_zone": inst.zone,
        "__meta_baton_version": inst.version,
        "__meta_baton_health": health,
        "__meta_baton_tags": f",{','.join(tags)}," if tags else "",
    }
    for key, value in inst.metadata.items():
        if not key.startswith("consul."):
            labels[f"__meta_baton_metadata_{_LABEL.sub('_', key)}"] = value
    return {"targets": [f"{host}:{inst.port}"], "labels": labels}


class PrometheusSd:
    def __init__(self, view: RegistryView, datacenter: str) -> None:
        self.view = view
        self.datacenter = datacenter

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/prometheus/targets", self.targets)]

    async def targets(self, request: web.Request) -> web.Response:
        if not self.view.loaded:  # Prometheus keeps its last targets on an error
            raise Unavailable("this gateway has not read the registry yet; try again")
        wanted = set(request.query.getall("service", []))
        passing = "passing" in request.query
        groups = []
        for name, state in sorted(self.view.services.items()):
            if wanted and name not in wanted:
                continue
            for inst in sorted(state.instances.values(), key=lambda i: i.instance_id):
                ejection = state.ejection(inst.instance_id)
                checks = checks_of(inst, name, self.datacenter, state.index, ejection)
                health = aggregated(checks)
                if passing and health != "passing":
                    continue
                groups.append(target_group(inst, name, health))
        return json(groups)
