"""The prober bench's target: health URLs whose answers the bench sets.

`GET /h/<name>` answers 200 ("ok"), or the code `PUT /set/<name>/<code>` set for it; the
same target serves the prober and the bare aiohttp loop it is compared with.

    python tests/bench/check_target.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


def main(port: int) -> None:
    codes: dict[str, int] = {}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=codes.get(request.match_info["name"], 200), text="ok")

    async def set_code(request: web.Request) -> web.Response:
        codes[request.match_info["name"]] = int(request.match_info["code"])
        return web.Response(text="set")

    app = web.Application()
    app.router.add_get("/h/{name}", health)
    app.router.add_put("/set/{name}/{code}", set_code)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
