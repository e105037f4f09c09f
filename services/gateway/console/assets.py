"""The console's files, read once at start from static/ and served from memory.

Only the files listed here are served (no path from a request touches the disk). Every
answer carries a Content-Security-Policy that allows scripts, styles and requests from
this origin only: no inline script, no foreign one, no plug-in, no framing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from services.errors import NotFound

__all__ = ["CSP", "FILES", "Assets"]

STATIC: Final = Path(__file__).parent / "static"
FILES: Final = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Assets:
    def __init__(self, folder: Path = STATIC) -> None:
        self.files = {name: (folder / name).read_bytes() for name in FILES}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.home),
            web.get("/ui", self.home),
            web.get("/ui/", self.index),
            web.get("/ui/{file}", self.asset),
        ]

    async def home(self, request: web.Request) -> web.Response:
        del request
        raise web.HTTPFound("/ui/")

    async def index(self, request: web.Request) -> web.Response:
        del request
        return self._answer("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in self.files:
            raise NotFound(f"the console has no file {name!r}; its page is /ui/")
        return self._answer(name)

    def _answer(self, name: str) -> web.Response:
        return web.Response(
            body=self.files[name], content_type=FILES[name], charset="utf-8", headers=HEADERS
        )
