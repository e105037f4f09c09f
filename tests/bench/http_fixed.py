"""The baseline of the HTTP resolve bench: a bare aiohttp handler answering a fixed
Endpoint body. Everything the gateway does beyond this (a NATS request to the balancer,
and its pick) is what resolving over HTTP costs."""

from __future__ import annotations

import sys

import msgspec
from aiohttp import web

from schemas.balancer import Endpoint


def main(port: int) -> None:
    body = msgspec.json.encode(
        Endpoint(
            instance_id="i0", host="127.0.0.1", port=8000, zone="", metadata={}, strategy="weighted"
        )
    )

    async def resolve(request: web.Request) -> web.Response:
        del request
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/resolve/{service}", resolve)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
