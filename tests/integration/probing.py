"""What the prober's tests share: results followed on NATS, HTTP targets on ports of their own."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from barrier import subscribed
from waiting import until

from schemas import subjects
from schemas.checks import CheckResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client

__all__ = ["Results", "follow", "serve_http"]


class Results:
    """Every check result published, in order."""

    def __init__(self) -> None:
        self.seen: list[CheckResult] = []

    async def on_msg(self, msg: Any) -> None:
        self.seen.append(msgspec.json.decode(msg.data, type=CheckResult))

    def of(self, check_id: str) -> list[CheckResult]:
        return [r for r in self.seen if r.check_id == check_id]

    def last(self, check_id: str) -> CheckResult | None:
        found = self.of(check_id)
        return found[-1] if found else None

    async def status(self, check_id: str, status: str, timeout: float = 10) -> CheckResult:
        def check() -> CheckResult | None:
            last = self.last(check_id)
            return last if last is not None and last.status == status else None

        return await until(check, timeout, what=f"{check_id} {status}")


@contextlib.asynccontextmanager
async def follow(nc: Client, root: str) -> AsyncIterator[Results]:
    """Every result published under the subject tree `root`, while the block runs."""
    found = Results()
    sub = await nc.subscribe(subjects.every(root), cb=found.on_msg)
    await subscribed(nc)
    try:
        yield found
    finally:
        await sub.unsubscribe()


@contextlib.asynccontextmanager
async def serve_http(app: web.Application) -> AsyncIterator[int]:
    """`app` on a port of its own on 127.0.0.1; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()
