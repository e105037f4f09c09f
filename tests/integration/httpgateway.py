"""Helpers for the gateway's HTTP tests: a running stack and a client."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from workers import run_balancer, run_gateway, run_governor, run_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Http", "stack"]


class Http:
    """An aiohttp client bound to one gateway's base URL."""

    def __init__(self, session: aiohttp.ClientSession, base: str, gateway: Any) -> None:
        self.session = session
        self.base = base
        self.gateway = gateway

    async def call(
        self, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        """(status, decoded body (JSON, text or None), headers)."""
        async with self.session.request(method, self.base + path, json=body, **kw) as resp:
            raw = await resp.read()
            if not raw:
                data: Any = None
            elif resp.content_type == "application/json":
                data = await resp.json()
            else:
                data = raw.decode()
            return resp.status, data, resp.headers


@asynccontextmanager
async def stack(
    url: str, *, balancer: bool = True, governor: bool = True, **settings: Any
) -> AsyncIterator[Http]:
    """Registry (fast sweeps), optionally balancer and governor, and a gateway on HTTP."""
    settings.setdefault("http_port", -1)
    async with AsyncExitStack() as es:
        await es.enter_async_context(run_registry(url))
        if governor:
            await es.enter_async_context(run_governor(url))
        if balancer:
            worker = await es.enter_async_context(run_balancer(url))
            await asyncio.wait_for(worker.sync.synced.wait(), 5)
        gw = await es.enter_async_context(run_gateway(url, **settings))
        await asyncio.wait_for(gw.view.synced.wait(), 5)
        session = await es.enter_async_context(aiohttp.ClientSession())
        yield Http(session, f"http://127.0.0.1:{gw.http_port}", gw)
