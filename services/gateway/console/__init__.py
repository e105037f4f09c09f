"""The operator console (docs/console.md): a page the gateway serves at /ui/ on its HTTP
port, and the JSON it reads and writes under /v1/ui/.

    static/       the page: plain HTML, CSS and one JS module, committed (no build step)
    assets.py     serves them, with a Content-Security-Policy that allows only them
    api.py        the reads (from the read model) and the event stream
    actions.py    the writes, through the governor and the registry, as `baton` does
    shapes.py     what a row shows: states and why, counts, diffs (pure)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.console.actions import ConsoleActions
from services.gateway.console.api import ConsoleApi
from services.gateway.console.assets import Assets

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from services.bus import Bus
    from services.gateway.http.asker import Asker
    from services.gateway.http.tokens import Access
    from services.view import RegistryView

__all__ = ["routes"]


def routes(  # the app's parts it reads and writes through
    bus: Bus,
    view: RegistryView,
    asker: Asker,
    access: Access,
    *,
    timeout_s: float,
    closing: asyncio.Event,
    grafana_url: str = "",
) -> list[web.RouteDef]:
    """Every route of the console: the page, its reads, its event stream, its writes."""
    api = ConsoleApi(
        bus, view, asker, timeout_s=timeout_s, closing=closing, grafana_url=grafana_url
    )
    actions = ConsoleActions(asker, access, timeout_s=timeout_s)
    return [*Assets().routes(), *api.routes(), *actions.routes()]
