"""HTTP answers of the gateway: the contract's `{"code", "message"}` for Baton's API,
Consul's plain-text sentences for the Consul API, and JSON bodies encoded once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from schemas.errors import ErrorReply

if TYPE_CHECKING:
    from services.errors import BatonError

__all__ = ["JSON", "consul_error", "error", "json", "status_of"]

JSON: Final = "application/json"
_encoder = msgspec.json.Encoder()


def status_of(err: BatonError) -> int:
    """The HTTP status of a contract error: the wire code, which is HTTP's already."""
    code = err.code
    return code if 400 <= code <= 599 else 500


def json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encoder.encode(body), status=status, content_type=JSON, headers=headers
    )


def error(status: int, message: str) -> web.Response:
    """Baton's error body, as on NATS: `{"code": <status>, "message": <sentence>}`."""
    return json(ErrorReply(code=status, message=" ".join(message.split())), status=status)


def consul_error(status: int, message: str) -> web.Response:
    """Consul answers errors as plain text, and its clients print that text."""
    return web.Response(text=message + "\n", status=status, content_type="text/plain")
