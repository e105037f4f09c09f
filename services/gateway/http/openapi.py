"""The OpenAPI 3.1 document of the gateway's HTTP API, served at /v1/openapi.json.

Payload schemas come from the wire Structs themselves (msgspec's JSON Schema), so the
document cannot drift from what the routes decode; a test checks its paths against the
app's routes both ways.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from schemas.balancer import CallReport, Endpoint
from schemas.errors import ErrorReply
from schemas.governor import ConfigHistory, ServiceConfig
from schemas.registry import Ack, Deregistration, Heartbeat, InstanceList, Registration, ServiceList
from services.gateway.console.openapi import paths as console_paths

__all__ = ["document"]

_REF: Final = "#/components/schemas/{name}"
_STRUCTS: Final = (
    Endpoint,
    CallReport,
    Registration,
    Heartbeat,
    Deregistration,
    Ack,
    InstanceList,
    ServiceList,
    ServiceConfig,
    ConfigHistory,
    ErrorReply,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    what = {
        400: "bad input: the message says what was wrong and how to fix it",
        403: "the write needs a token that names this service (GATEWAY_TOKENS)",
        404: "unknown service or instance",
        409: "conflict",
        413: "the body is over 64 KiB (as sent, or once decoded)",
        415: "a Content-Encoding other than identity, gzip or deflate",
        501: "a Consul API that Baton does not have",
        503: "no instance can take the request, or no worker serves the subject",
        504: "the worker behind this route did not answer in time",
    }
    return {str(c): _json(_ref("ErrorReply"), what[c]) for c in codes}


def _param(name: str, where: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


_NAME: Final = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
_SERVICE: Final = _param("service", "path", "service name: 1 to 64 of A-Z a-z 0-9 _ -", **_NAME)
_TOKEN: Final[list[dict[str, list[str]]]] = [{"consulToken": []}, {"bearer": []}]


def _baton() -> dict[str, Any]:
    def write(body: str, reply: str, summary: str, subject: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "description": f"NATS subject `{subject}`.",
                "parameters": [_SERVICE],
                "security": _TOKEN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(body)}},
                },
                "responses": {
                    "200": _json(_ref(reply), "the registry's reply"),
                    **_errors(400, 403, 404, 413, 415, 503, 504),
                },
            }
        }

    def read(reply: str, summary: str, subject: str, *params: Any) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "description": f"NATS subject `{subject}`.",
                "parameters": list(params),
                "responses": {
                    "200": _json(_ref(reply), "the reply"),
                    **_errors(400, 404, 503, 504),
                },
            }
        }

    return {
        "/v1/resolve/{service}": read(
            "Endpoint",
            "pick one instance of the service (its strategy, weights, zone, drain)",
            "balancer.v1.resolve.{service}",
            _SERVICE,
            _param("key", "query", "consistent_hash key (a user id, a session)"),
            _param("zone", "query", "prefer instances in this zone"),
            _param(
                "exclude",
                "query",
                "instance ids not to pick (repeat, or comma-separated)",
                type="array",
                items={"type": "string"},
            ),
            _param("strategy", "query", "override the service's strategy for this pick"),
            _param(
                "track",
                "query",
                "false: a pick nobody reports (not counted in flight)",
                type="boolean",
            ),
        ),
        "/v1/report/{service}": {
            "post": {
                "summary": "report the outcome of a call to a resolved endpoint",
                "description": "NATS subject `balancer.v1.report.{service}` (published).",
                "parameters": [_SERVICE],
                "security": _TOKEN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CallReport")}},
                },
                "responses": {
                    "204": {"description": "published"},
                    **_errors(400, 403, 413, 415),
                },
            }
        },
        "/v1/register/{service}": write(
            "Registration", "Ack", "register an instance", "registry.v1.register.{service}"
        ),
        "/v1/heartbeat/{service}": write(
            "Heartbeat", "Ack", "renew an instance's lease", "registry.v1.heartbeat.{service}"
        ),
        "/v1/deregister/{service}": write(
            "Deregistration", "Ack", "deregister an instance", "registry.v1.deregister.{service}"
        ),
        "/v1/instances/{service}": read(
            "InstanceList",
            "the service's instances (paged with after and limit)",
            "registry.v1.instances.{service}",
            _SERVICE,
            _param("after", "query", "the next_after of the previous page"),
            _param(
                "limit",
                "query",
                "instances per page, 0 = all",
                type="integer",
                minimum=0,
                maximum=100000,
            ),
        ),
        "/v1/services": read("ServiceList", "every registered service", "registry.v1.services"),
        "/v1/config/{service}": read(
            "ServiceConfig",
            "the service's config (read-only)",
            "governor.v1.config.{service}",
            _SERVICE,
        ),
        "/v1/history/{service}": read(
            "ConfigHistory",
            "the service's config history",
            "governor.v1.history.{service}",
            _SERVICE,
        ),
    }


_STATUS: Final = {"type": "string", "enum": ["passing", "warning", "critical"]}
_TTL_CHECK: Final = {
    "type": "object",
    "description": "a TTL check (only TTL checks exist); starts critical unless Status is given",
    "required": ["TTL"],
    "properties": {
        "CheckID": {"type": "string"},
        "Name": {"type": "string"},
        "TTL": {"type": "string", "description": 'a duration from "1s" to "1h"'},
        "Status": _STATUS,
        "Notes": {"type": "string"},
        "DeregisterCriticalServiceAfter": {"type": "string"},
    },
}
# Shown in Consul's capitalisation; any other (name, NAME, snake_case) is read the same.
_REGISTER: Final = {
    "type": "object",
    "required": ["Name", "Port"],
    "properties": {
        "Name": _NAME,
        "ID": _NAME,
        "Address": {"type": "string"},
        "Port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "Tags": {"type": "array", "items": {"type": "string", "pattern": "^[^,]+$"}},
        "Meta": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,128}$"},
            "additionalProperties": {"type": "string", "maxLength": 1024},
            "maxProperties": 60,
        },
        "Weights": {
            "type": "object",
            "properties": {
                "Passing": {"type": "integer", "minimum": 0, "maximum": 10000},
                "Warning": {"type": "integer", "minimum": 0, "maximum": 10000},
            },
        },
        "Locality": {"type": "object", "properties": {"Zone": {"type": "string"}}},
        "Check": _TTL_CHECK,
        "Checks": {"type": "array", "items": _TTL_CHECK, "maxItems": 1},
    },
}
_UPDATE: Final = {
    "type": "object",
    "properties": {"Status": _STATUS, "Output": {"type": "string"}},
}


def _consul() -> dict[str, Any]:
    blocking = [
        _param("index", "query", "block until the X-Consul-Index passes this", type="integer"),
        _param("wait", "query", 'longest block, a duration such as "30s" (default 5m, max 10m)'),
        _param("stale", "query", "accepted; every answer is the gateway's view"),
        _param("dc", "query", "must be the gateway's datacenter when given"),
    ]
    tag = _param("tag", "query", "only instances with this tag (repeat: all of them)")
    name = _param("name", "path", "service name")
    ident = _param("id", "path", "service ID, or check ID (service:<service id>)")
    headers = {
        "X-Consul-Index": {"schema": {"type": "integer", "minimum": 1}},
        "X-Consul-KnownLeader": {"schema": {"type": "string", "enum": ["true"]}},
        "X-Consul-LastContact": {"schema": {"type": "integer"}},
    }

    def get(summary: str, *params: Any, shape: str = "object") -> dict[str, Any]:
        return {
            "get": {
                "tags": ["consul"],
                "summary": summary,
                "parameters": list(params),
                "responses": {
                    "200": {
                        **_json({"type": shape}, "Consul's shape"),
                        "headers": headers,
                    },
                    "400": {
                        "description": "bad query, or another datacenter (a plain-text "
                        "sentence, as Consul)"
                    },
                },
            }
        }

    def put(summary: str, *params: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {
            "tags": ["consul"],
            "summary": summary,
            "parameters": list(params),
            "security": _TOKEN,
            "responses": {
                "200": {"description": "done (empty body)"},
                "400": {"description": "bad request (a plain-text sentence)"},
                "403": {"description": "no token, or one that does not name the service"},
                "404": {"description": "unknown service or check ID"},
                "413": {"description": "the body is over 64 KiB (as sent, or once decoded)"},
                "415": {"description": "a Content-Encoding other than identity, gzip, deflate"},
            },
        }
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        return {"put": op}

    return {
        "/v1/agent/self": get("the agent's config (Config.Datacenter)"),
        "/v1/agent/services": get("the services this gateway registered"),
        "/v1/agent/checks": get(
            "the TTL, HTTP, TCP and gRPC checks of the services this gateway registered"
        ),
        "/v1/catalog/services": get("service name -> tags", *blocking),
        "/v1/catalog/service/{name}": get(
            "the service's instances, catalog shape", name, tag, *blocking, shape="array"
        ),
        "/v1/health/service/{name}": get(
            "the service's instances with Node, Service and Checks",
            name,
            tag,
            _param("passing", "query", "only instances whose checks all pass"),
            *blocking,
            shape="array",
        ),
        "/v1/health/checks/{name}": get(
            "every check of the service's instances, with Status and Output",
            name,
            *blocking,
            shape="array",
        ),
        "/v1/health/state/{state}": get(
            "every check in a state: any, passing, warning or critical",
            _param("state", "path", "any, passing, warning or critical"),
            *blocking,
            shape="array",
        ),
        "/v1/status/leader": get("the leader (always known)", shape="string"),
        "/v1/status/peers": get("the peers", shape="array"),
        "/v1/agent/service/register": put(
            "register a service (any key capitalisation; HTTP, TCP, gRPC checks and at "
            "most one TTL check)",
            body=_REGISTER,
        ),
        "/v1/catalog/register": put(
            'register an external service (NodeMeta {"external-node": "true"}) whose '
            "checks' Definition (HTTP or TCP) the prober runs",
            body={"type": "object"},
        ),
        "/v1/catalog/deregister": put(
            "deregister an external service: {Node, ServiceID}", body={"type": "object"}
        ),
        "/v1/agent/service/deregister/{id}": put("deregister a service", ident),
        "/v1/agent/check/pass/{id}": put(
            "TTL check passing (a heartbeat)", ident, _param("note", "query", "output")
        ),
        "/v1/agent/check/warn/{id}": put(
            "TTL check warning", ident, _param("note", "query", "output")
        ),
        "/v1/agent/check/fail/{id}": put(
            "TTL check critical (weight 0)", ident, _param("note", "query", "output")
        ),
        "/v1/agent/check/update/{id}": put(
            "TTL check update with {Status, Output}", ident, body=_UPDATE
        ),
    }


_KV_PAIR: Final = {
    "type": "object",
    "properties": {
        "Key": {"type": "string"},
        "Value": {"type": ["string", "null"], "contentEncoding": "base64"},
        "Flags": {"type": "integer", "minimum": 0},
        "CreateIndex": {"type": "integer"},
        "ModifyIndex": {"type": "integer"},
        "LockIndex": {"type": "integer", "enum": [0]},
        "Session": {"type": "string"},
    },
}


def _consul_kv() -> dict[str, Any]:
    """Consul's /v1/kv, carried out by the config center (consul_kv.py)."""
    key = _param("key", "path", "the key (a prefix with recurse or keys)")
    cas = _param("cas", "query", "write only if ModifyIndex is this (0: absent)", type="integer")
    written = {
        "200": _json({"type": "boolean"}, "true, or false when cas found another index"),
        "400": {"description": "a bad key or parameter (a plain-text sentence)"},
        "403": {"description": "the token has no kv write right on the key"},
        "501": {"description": "?acquire and ?release: Baton has no sessions"},
    }
    read_params = [
        key,
        _param("recurse", "query", "every key starting with the key"),
        _param("keys", "query", "names only"),
        _param("separator", "query", "with keys: fold names at this separator"),
        _param("raw", "query", "the value's bytes, not JSON"),
        _param("index", "query", "block until the X-Consul-Index passes this", type="integer"),
        _param("wait", "query", 'longest block, a duration such as "30s" (default 5m, max 10m)'),
        _param("consistent", "query", "accepted"),
        _param("stale", "query", "accepted"),
        _param("dc", "query", "must be the gateway's datacenter when given"),
    ]
    return {
        "/v1/kv/{key}": {
            "get": {
                "tags": ["consul"],
                "summary": "a key's pair, or every pair (or name) under a prefix",
                "parameters": read_params,
                "responses": {
                    "200": _json({"type": "array", "items": _KV_PAIR}, "Consul's KVPairs"),
                    "404": {"description": "no such key (X-Consul-Index still set)"},
                },
            },
            "put": {
                "tags": ["consul"],
                "summary": "store the raw body (at most 512 KiB, else 413) under the key",
                "parameters": [
                    key,
                    cas,
                    _param("flags", "query", "a uint64 kept with the value", type="integer"),
                ],
                "security": _TOKEN,
                "requestBody": {"content": {"application/octet-stream": {"schema": {}}}},
                "responses": {**written, "413": {"description": "a value over 512 KiB"}},
            },
            "delete": {
                "tags": ["consul"],
                "summary": "delete the key, or with recurse every key under it",
                "parameters": [key, cas, _param("recurse", "query", "every key under it")],
                "security": _TOKEN,
                "responses": written,
            },
        }
    }


def document(version: str = "1") -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_STRUCTS, ref_template=_REF)
    paths = {
        **_baton(),
        "/v1/openapi.json": {
            "get": {
                "summary": "this document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        **_consul(),
        **_consul_kv(),
        "/v1/prometheus/targets": {
            "get": {
                "summary": "Prometheus HTTP service discovery: one target group per instance",
                "parameters": [
                    _param("service", "query", "only this service (repeat for several)"),
                    _param("passing", "query", "only instances whose checks all pass"),
                ],
                "responses": {"200": _json({"type": "array"}, "Prometheus target groups")},
            }
        },
        **console_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Baton gateway HTTP API",
            "version": version,
            "description": "Baton's NATS contract over HTTP, and the subset of Consul's HTTP "
            "API that existing tools call. Reads are open; writes need a token of "
            "GATEWAY_TOKENS (X-Consul-Token or Authorization: Bearer), or, without that "
            "file, a loopback peer.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "consulToken": {"type": "apiKey", "in": "header", "name": "X-Consul-Token"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
