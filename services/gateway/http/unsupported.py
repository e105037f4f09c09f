"""Consul APIs that Baton does not have: a clear 501, never a silent empty answer.

A tool that reads `[]` from `/v1/acl/...` would take it for data; a 501 with a sentence
tells its operator what to use instead.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from services.gateway.http.replies import consul_error, error

__all__ = ["UNSUPPORTED", "routes"]

_WHY: Final = {
    "kv": "the config center serves /v1/kv/{key} (GET, PUT, DELETE)",
    "session": "Baton has no sessions or locks",
    "acl": "Baton has no ACL API; HTTP writes take the tokens of GATEWAY_TOKENS",
    "txn": "Baton has no transactions; write keys one at a time with PUT /v1/kv/{key}, "
    "compare-and-set with ?cas",
    "event": "Baton has no user events; subscribe to registry.v1.events over NATS",
    "connect": "Baton has no service mesh (Connect)",
    "config": "Baton has no Consul config entries; GET /v1/config/{service} is Baton's config",
    "operator": "Baton has no Raft operator API; its workers are managed by `baton status`",
    "snapshot": "Baton has no snapshots: the registry is rebuilt from its instances",
    "query": "Baton has no prepared queries; resolve with GET /v1/resolve/{service}",
    "coordinate": "Baton has no network coordinates",
    "discovery-chain": "Baton has no discovery chains",
    "peering": "Baton has no cluster peering",
    "namespace": "Baton has no namespaces",
    "namespaces": "Baton has no namespaces",
    "partition": "Baton has no admin partitions",
    "partitions": "Baton has no admin partitions",
    "internal": "Consul's internal UI endpoints are not served",
    "agent": "this agent endpoint is not served",
    "catalog": "this catalog endpoint is not served",
    "health": "this health endpoint is not served",
    "status": "this status endpoint is not served",
}
SUPPORTED: Final = (
    "agent/self, agent/services, agent/checks, agent/service/register, "
    "agent/service/deregister/<id>, agent/check/pass|warn|fail|update/<id>, "
    "catalog/services, catalog/service/<name>, health/service/<name>, status/leader, "
    "status/peers, kv/<key>"
)
UNSUPPORTED: Final = tuple(_WHY)


async def _allowed(request: web.Request) -> set[str]:
    """The methods of a route whose path matches, but not its method (a 405)."""
    methods: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == "/v1/{tail}":
            continue
        match, allowed = await resource.resolve(request)
        if match is None:
            methods |= allowed
    return methods


async def _answer(request: web.Request) -> web.Response:
    allowed = await _allowed(request)
    if allowed:
        reply = error(
            405, f"{request.method} {request.path} is not served; use {', '.join(sorted(allowed))}"
        )
        reply.headers["Allow"] = ",".join(sorted(allowed))
        return reply
    first = request.match_info["tail"].split("/", 1)[0]
    why = _WHY.get(first)
    if why is None:
        return error(404, f"no route {request.method} {request.path}; see /v1/openapi.json")
    return consul_error(
        501,
        f"{request.method} {request.path} is not supported: {why}. Baton's gateway serves "
        f"this Consul subset: {SUPPORTED}; and its own API (GET /v1/openapi.json).",
    )


def routes() -> list[web.RouteDef]:
    """Registered last: a Consul path not routed before falls here."""
    return [web.route("*", "/v1/{tail:.*}", _answer)]
