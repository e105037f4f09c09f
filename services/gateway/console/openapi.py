"""The console's paths in the gateway's OpenAPI document (services/gateway/http/openapi.py)."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["paths"]

_SERVICE: Final = {
    "name": "service",
    "in": "path",
    "required": True,
    "description": "service name: 1 to 64 of A-Z a-z 0-9 _ -",
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
}
_ERROR: Final = {
    "description": "the sentence of what was wrong ({code, message})",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}},
}
_TOKEN: Final[list[dict[str, list[str]]]] = [{"consulToken": []}, {"bearer": []}]


def _query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _get(summary: str, *params: dict[str, Any], kind: str = "application/json") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(params),
            "responses": {
                "200": {"description": summary, "content": {kind: {"schema": {"type": "object"}}}},
                "400": _ERROR,
                "404": _ERROR,
            },
        }
    }


def _post(summary: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    body = {"type": "object", "properties": fields, "required": required}
    return {
        "post": {
            "summary": summary,
            "parameters": [_SERVICE],
            "security": _TOKEN,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {"description": "the governor's or the registry's reply"},
                **{str(c): _ERROR for c in (400, 403, 404, 409, 503, 504)},
            },
        }
    }


_TEXT: Final = {"type": "string"}
_INT: Final = {"type": "integer"}


def paths() -> dict[str, Any]:
    return {
        "/": _get("redirects to the console, /ui/", kind="text/html"),
        "/ui": _get("redirects to the console, /ui/", kind="text/html"),
        "/ui/": _get("the operator console (docs/console.md)", kind="text/html"),
        "/ui/{file}": _get(
            "one of the console's files",
            {"name": "file", "in": "path", "required": True, "schema": _TEXT},
            kind="text/plain",
        ),
        "/v1/ui/overview": _get(
            "every service with its instance counts by state, strategy, panic, revision",
            _query("name", "only services whose name contains this"),
            _query("tag", "only services with an instance of this metadata key (or key=value)"),
            _query("zone", "only services with an instance in this zone"),
            _query("state", "only services with an instance in this state"),
            _query("after", "the page after this service name"),
            _query("limit", "services on a page (50 by default, at most 1000)"),
        ),
        "/v1/ui/services/{service}": _get(
            "the service's instances (state and why, weights) and its config", _SERVICE
        ),
        "/v1/ui/history/{service}": _get(
            "every config revision with who, why, when and its diff", _SERVICE
        ),
        "/v1/ui/workers": _get("every worker replica that answers $SRV.STATS"),
        "/v1/ui/events": _get(
            "server-sent events: one `change` for each change of the read model",
            kind="text/event-stream",
        ),
        "/v1/ui/services/{service}/change": _post(
            "drain, undrain, weigh an instance or change the strategy (governor)",
            {
                "instance_id": _TEXT,
                "drained": {"type": "boolean"},
                "weight": _INT,
                "strategy": _TEXT,
                "reason": _TEXT,
                "expected_revision": _INT,
            },
            [],
        ),
        "/v1/ui/services/{service}/rollback": _post(
            "roll the config back to a revision (governor)",
            {"to_revision": _INT, "reason": _TEXT, "expected_revision": _INT},
            ["to_revision"],
        ),
        "/v1/ui/services/{service}/deregister": _post(
            "deregister an instance (registry)", {"instance_id": _TEXT}, ["instance_id"]
        ),
    }
