"""Real HTTP servers for tests of what routes to them (Traefik, Envoy)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["Backends", "named_backend"]


async def named_backend(name: str) -> tuple[web.AppRunner, int]:
    """An aiohttp server on a port the OS picks, answering every GET with `name`;
    returns its runner (to clean up) and its port."""

    async def hello(request: web.Request) -> web.Response:
        del request
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


class Backends:
    """Named backends started on demand, all cleaned up by `close()`."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []

    async def start(self, name: str) -> int:
        """A new backend answering `name`; returns its port."""
        runner, port = await named_backend(name)
        self.runners.append(runner)
        return port

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
