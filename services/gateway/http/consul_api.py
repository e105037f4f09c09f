"""The Consul HTTP API subset that existing tools call, at Consul's paths and shapes.

Reads come from the gateway's registry view and block on its change index (Prometheus'
`consul_sd_configs`, Traefik, py-consul); writes are the agent's (agent.py). What Consul
has and Baton does not (KV, sessions, ACLs, ...) answers 501 with a sentence
(unsupported.py), never an empty result that would look like data.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from services.errors import BadRequest, Unavailable
from services.gateway.http.blocking import block, blocking_params
from services.gateway.http.bodies import body_of, decode_json
from services.gateway.http.consul_model import (
    normalise,
    parse_catalog_registration,
    parse_registration,
    parse_status,
)
from services.gateway.http.consul_render import (
    active_checks,
    aggregated,
    catalog_entry,
    checks_of,
    health_entry,
    service_tags,
)
from services.gateway.http.params import flag
from services.gateway.http.replies import json

if TYPE_CHECKING:
    from schemas.registry import Instance
    from services.gateway.http.agent import Agent
    from services.gateway.http.consul_model import ConsulService, Status
    from services.gateway.http.tokens import Access, Write
    from services.view import RegistryView

__all__ = ["PREFIXES", "ConsulApi", "token_of"]

PREFIXES: Final = ("/v1/agent/", "/v1/catalog/", "/v1/health/", "/v1/status/")
CONSUL_TRUE: Final = True  # what Consul's catalog writes answer
VERSION: Final = "1.17.0"  # the Consul API level the subset follows (for agent/self)


def token_of(request: web.Request) -> str | None:
    token = request.headers.get("X-Consul-Token")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class ConsulApi:
    def __init__(
        self, view: RegistryView, agent: Agent, access: Access, *, datacenter: str, node: str
    ) -> None:
        self.view = view
        self.agent = agent
        self.access = access
        self.datacenter = datacenter
        self.node = node
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, node))
        self.closing = asyncio.Event()  # set when the app shuts down: parked queries answer

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/agent/self", self.agent_self),
            web.get("/v1/agent/services", self.agent_services),
            web.get("/v1/agent/checks", self.agent_checks),
            web.get("/v1/catalog/services", self.catalog_services),
            web.get("/v1/catalog/service/{name}", self.catalog_service),
            web.get("/v1/health/service/{name}", self.health_service),
            web.get("/v1/health/checks/{name}", self.health_checks),
            web.get("/v1/health/state/{state}", self.health_state),
            web.put("/v1/catalog/register", self.catalog_register),
            web.put("/v1/catalog/deregister", self.catalog_deregister),
            web.get("/v1/status/leader", self.status_leader),
            web.get("/v1/status/peers", self.status_peers),
            web.put("/v1/agent/service/register", self.service_register),
            web.put("/v1/agent/service/deregister/{id}", self.service_deregister),
            web.put("/v1/agent/check/pass/{id}", self.check_pass),
            web.put("/v1/agent/check/warn/{id}", self.check_warn),
            web.put("/v1/agent/check/fail/{id}", self.check_fail),
            web.put("/v1/agent/check/update/{id}", self.check_update),
        ]

    # -- headers and query rules ---------------------------------------------------------
    def _headers(self, index: int) -> dict[str, str]:
        return {
            "X-Consul-Index": str(max(index, 1)),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": "leader",
        }

    def _read_rules(self, request: web.Request) -> None:
        if not self.view.loaded:  # an empty list now would read as "no instance"
            raise Unavailable(
                "No cluster leader: this gateway has not read the registry yet "
                "(is NATS up and the registry running?); try again"
            )
        query = request.query
        if query.get("filter"):
            raise BadRequest(
                "filter expressions are not supported by Baton's gateway; use tag= and "
                "passing, or filter on the client (Prometheus: relabel_configs)"
            )
        dc = query.get("dc")
        if dc and dc != self.datacenter:
            raise BadRequest(f'No path to datacenter "{dc}": this gateway is "{self.datacenter}"')

    # -- agent ---------------------------------------------------------------------------
    async def agent_self(self, request: web.Request) -> web.Response:
        del request
        member = {"Name": self.node, "Addr": "127.0.0.1", "Port": 8301, "Status": 1, "Tags": {}}
        return json(
            {
                "Config": {
                    "Datacenter": self.datacenter,
                    "PrimaryDatacenter": self.datacenter,
                    "NodeName": self.node,
                    "NodeID": self.node_id,
                    "Server": False,
                    "Revision": "baton",
                    "Version": VERSION,
                },
                "Member": member,
                "Meta": {"baton": "gateway"},
            }
        )

    def _agent_service(self, svc: ConsulService) -> dict[str, Any]:
        return {
            "ID": svc.instance_id,
            "Service": svc.service,
            "Tags": list(svc.tags),
            "Meta": svc.meta,
            "Port": svc.port,
            "Address": svc.host,
            "Weights": {"Passing": svc.weight_passing, "Warning": svc.weight_warning},
            "EnableTagOverride": False,
            "Datacenter": self.datacenter,
        }

    async def agent_services(self, request: web.Request) -> web.Response:
        """The services this gateway registered (an agent lists its own)."""
        del request
        return json({i: self._agent_service(h.svc) for i, h in self.agent.held.items()})

    async def agent_checks(self, request: web.Request) -> web.Response:
        del request
        out: dict[str, Any] = {}
        for held in self.agent.held.values():
            for active in self._active_checks(held.svc):
                out[active["CheckID"]] = active
            check = held.svc.check
            if check is None:
                continue
            out[check.check_id] = {
                "Node": self.node,
                "CheckID": check.check_id,
                "Name": check.name,
                "Status": held.status,
                "Notes": check.notes,
                "Output": held.output,
                "ServiceID": held.svc.instance_id,
                "ServiceName": held.svc.service,
                "ServiceTags": list(held.svc.tags),
                "Type": "ttl",
            }
        return json(out)

    # -- catalog and health --------------------------------------------------------------
    async def catalog_services(self, request: web.Request) -> web.Response:
        self._read_rules(request)
        index, wait = blocking_params(request.query)
        at = await block(self.view, index, wait, None, self.closing)
        body: dict[str, list[str]] = {}
        for name, state in sorted(self.view.services.items()):
            tags: set[str] = set()
            for inst in state.instances.values():
                tags.update(service_tags(inst))
            body[name] = sorted(tags)
        return json(body, headers=self._headers(at))

    def _instances(self, request: web.Request, name: str) -> list[Instance]:
        state = self.view.service(name)
        if state is None:
            return []  # as Consul: an unknown service is an empty list, not an error
        wanted = request.query.getall("tag", [])
        found = [
            inst
            for inst in state.instances.values()
            if all(t in service_tags(inst) for t in wanted)
        ]
        found.sort(key=lambda i: i.instance_id)
        return found

    async def catalog_service(self, request: web.Request) -> web.Response:
        self._read_rules(request)
        name = request.match_info["name"]
        index, wait = blocking_params(request.query)
        at = await block(self.view, index, wait, name, self.closing)
        body = [
            catalog_entry(inst, name, self.datacenter, at)
            for inst in self._instances(request, name)
        ]
        return json(body, headers=self._headers(at))

    async def health_service(self, request: web.Request) -> web.Response:
        self._read_rules(request)
        name = request.match_info["name"]
        index, wait = blocking_params(request.query)
        at = await block(self.view, index, wait, name, self.closing)
        passing = flag(request.query, "passing")
        state = self.view.service(name)
        body = []
        for inst in self._instances(request, name):
            ejection = state.ejection(inst.instance_id) if state is not None else None
            checks = checks_of(inst, name, self.datacenter, at, ejection)
            if passing and aggregated(checks) != "passing":
                continue
            body.append(health_entry(inst, name, self.datacenter, at, ejection))
        return json(body, headers=self._headers(at))

    def _active_checks(self, svc: ConsulService) -> list[dict[str, Any]]:
        """A held service's HTTP/TCP/gRPC checks, with the status the registry holds."""
        state = self.view.service(svc.service)
        inst = state.instances.get(svc.instance_id) if state is not None else None
        if inst is None:
            return []
        return active_checks(inst, svc.service, {"Node": self.node, "Namespace": ""})

    async def health_checks(self, request: web.Request) -> web.Response:
        """`/v1/health/checks/<service>`: every check of every instance of the service."""
        self._read_rules(request)
        name = request.match_info["name"]
        index, wait = blocking_params(request.query)
        at = await block(self.view, index, wait, name, self.closing)
        state = self.view.service(name)
        body: list[dict[str, Any]] = []
        for inst in self._instances(request, name):
            ejection = state.ejection(inst.instance_id) if state is not None else None
            checks = checks_of(inst, name, self.datacenter, at, ejection)
            body.extend(c for c in checks if c["ServiceID"])  # the node's own is not the service's
        return json(body, headers=self._headers(at))

    async def health_state(self, request: web.Request) -> web.Response:
        """`/v1/health/state/<state>`: every check in that state (`any`: all of them)."""
        self._read_rules(request)
        wanted = request.match_info["state"]
        if wanted not in {"any", "passing", "warning", "critical"}:
            raise BadRequest(
                f"state {wanted!r} must be one of any, passing, warning, critical (as Consul)"
            )
        index, wait = blocking_params(request.query)
        at = await block(self.view, index, wait, None, self.closing)
        body: list[dict[str, Any]] = []
        for name, state in sorted(self.view.services.items()):
            for inst in sorted(state.instances.values(), key=lambda i: i.instance_id):
                ejection = state.ejection(inst.instance_id)
                checks = checks_of(inst, name, self.datacenter, at, ejection)
                body.extend(c for c in checks if wanted in ("any", c["Status"]))
        return json(body, headers=self._headers(at))

    async def status_leader(self, request: web.Request) -> web.Response:
        del request
        return json("127.0.0.1:8300")  # there is always a leader: the gateway answers

    async def status_peers(self, request: web.Request) -> web.Response:
        del request
        return json(["127.0.0.1:8300"])

    # -- agent writes --------------------------------------------------------------------
    def _allow(self, request: web.Request, write: Write, service: str) -> None:
        self.access.check(token_of(request), request.remote, write, service)

    async def service_register(self, request: web.Request) -> web.Response:
        body = decode_json(body_of(request))
        svc = parse_registration(body, caller=request.remote or "127.0.0.1")
        self._allow(request, "register", svc.service)
        await self.agent.register(svc)
        return web.Response(status=200)

    async def service_deregister(self, request: web.Request) -> web.Response:
        svc = self.agent.service_of(request.match_info["id"])
        self._allow(request, "register", svc.service)
        await self.agent.deregister(svc)
        return web.Response(status=200)

    async def catalog_register(self, request: web.Request) -> web.Response:
        """An external service (consul-esm's job, built in): the prober runs its checks."""
        svc = parse_catalog_registration(
            decode_json(body_of(request)), request.query.getall("node-meta", [])
        )
        self._allow(request, "register", svc.service)
        await self.agent.register(svc)
        return json(CONSUL_TRUE)

    async def catalog_deregister(self, request: web.Request) -> web.Response:
        body = normalise(decode_json(body_of(request)))
        service_id = body.get("serviceid") if isinstance(body, dict) else None
        if not isinstance(service_id, str) or not service_id:
            raise BadRequest(
                'the body must name the service: {"Node": "db-node", "ServiceID": "db-1"}; '
                "Baton has no nodes to deregister alone"
            )
        svc = self.agent.service_of(service_id)
        self._allow(request, "register", svc.service)
        await self.agent.deregister(svc)
        return json(CONSUL_TRUE)

    async def _check(self, request: web.Request, status: Status, output: str) -> web.Response:
        svc = self.agent.check_owner(request.match_info["id"])
        self._allow(request, "register", svc.service)
        await self.agent.update(svc, status, output)
        return web.Response(status=200)

    async def check_pass(self, request: web.Request) -> web.Response:
        return await self._check(request, "passing", request.query.get("note", ""))

    async def check_warn(self, request: web.Request) -> web.Response:
        return await self._check(request, "warning", request.query.get("note", ""))

    async def check_fail(self, request: web.Request) -> web.Response:
        return await self._check(request, "critical", request.query.get("note", ""))

    async def check_update(self, request: web.Request) -> web.Response:
        body = normalise(decode_json(body_of(request)))
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest('the body must be {"Status": "passing", "Output": "..."}')
        status = parse_status(body.get("status") or "passing")
        return await self._check(request, status, str(body.get("output") or ""))
