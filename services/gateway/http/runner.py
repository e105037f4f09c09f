"""The gateway's aiohttp runner: aiohttp's answer to bytes it cannot read, with a sentence.

aiohttp answers a request its parser cannot frame (a bad request line, target, header or
chunk) before any route or middleware runs, with the parser's own words as the body:
sometimes only the offending token (`*` for `GET * HTTP/1.1`). Here that answer is a
sentence, as every other answer of the gateway is; it stays a 400, plain text, and the
connection still closes after it. Bodies are decoded by the app (bodies.py), not by
aiohttp, so that a bad one is answered by the gateway too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

__all__ = ["AppRunner"]

_SHOWN = 200  # characters of the parser's words kept in the sentence


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400:
            said = " ".join((message or "").split())[:_SHOWN] or "malformed"
            message = (
                f"the request could not be read as HTTP/1.1 ({said}); send a request line, "
                "headers and a body framed as RFC 9112 says"
            )
        return super().handle_error(request, status, exc, message)


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner, its connections answering unreadable requests in sentences,
    and with aiohttp's own body decoding off."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app, access_log=None, auto_decompress=False)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server; only its connections' class differs
        return server
