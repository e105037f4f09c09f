"""The gateway's HTTP listener: Baton's API and the Consul subset, in one aiohttp app.

    baton_api.py     the NATS contract over HTTP (resolve, report, register, ...)
    consul_api.py    Consul's paths and shapes; consul_model.py (Consul -> Baton) and
                     consul_render.py (Baton -> Consul) map the models (pure)
    consul_kv.py     Consul's /v1/kv, carried out by the config center (services/kv)
    agent.py         Consul agent writes carried out on the registry's subjects
    asker.py         requests on one reply subscription (the resolve path)
    bodies.py        a body's encoding, size and depth, checked before any handler
    params.py        every number, index, size, duration and flag of a query, parsed once
    blocking.py      Consul's blocking queries on the view's change index
    tokens.py        who may write (GATEWAY_TOKENS, or loopback peers only)
    unsupported.py   Consul APIs Baton lacks: 501 with a sentence
    prometheus_sd.py Prometheus' HTTP discovery (for builds without Consul discovery)
    runner.py        the aiohttp runner: unreadable requests answered with a sentence too
    openapi.py       the OpenAPI document, served at /v1/openapi.json

The operator console (services/gateway/console/) adds its page at /ui/ and its JSON
under /v1/ui/.

Every error is answered with its status and a sentence, counted and logged; no request
can stop the worker.
"""

from __future__ import annotations

import collections
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from services.errors import BatonError
from services.gateway import console
from services.gateway.http import unsupported
from services.gateway.http.agent import Agent
from services.gateway.http.asker import Asker
from services.gateway.http.baton_api import BatonApi
from services.gateway.http.bodies import MAX_BODY, check_body
from services.gateway.http.consul_api import PREFIXES, ConsulApi
from services.gateway.http.consul_kv import ConsulKv, KvWaiters
from services.gateway.http.openapi import document
from services.gateway.http.prometheus_sd import PrometheusSd
from services.gateway.http.replies import consul_error, error, json, status_of
from services.gateway.http.tokens import Access, is_loopback

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.gateway.settings import GatewaySettings
    from services.view import RegistryView

__all__ = ["AGENT", "ASKER", "ERRORS", "KV", "make_app"]

ERRORS: Final = web.AppKey("errors", collections.Counter[tuple[str, int]])
AGENT: Final = web.AppKey("agent", Agent)
ASKER: Final = web.AppKey("asker", Asker)
KV: Final = web.AppKey("kv", ConsulKv)
KV_PATH: Final = "/v1/kv/"


def _middleware(log: FilteringBoundLogger, errors: collections.Counter[tuple[str, int]]) -> Any:
    @web.middleware
    async def answer_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if not request.path.startswith(KV_PATH):  # a value is bytes: consul_kv.py reads it
                await check_body(request)  # encoding, size and depth, before any handler
            return await handler(request)
        except BatonError as exc:
            status, message = status_of(exc), exc.message
        except web.HTTPRequestEntityTooLarge:
            status, message = 413, f"the body is larger than {MAX_BODY} bytes"
        except web.HTTPNotFound:  # outside /v1/ (the catch-all answers inside it)
            status = 404
            message = f"no route {request.method} {request.path}; see /v1/openapi.json"
        except web.HTTPException:
            raise  # aiohttp's own answers (405 and the like) keep their form
        except Exception as exc:  # a bug must not stop the worker; the client learns it
            log.exception("http.handler_failed", path=request.path)
            status, message = 500, f"internal error: {exc!r}"
        route = request.match_info.route.resource
        # by route, not by path: a scanner's paths must not grow the table
        errors[(route.canonical if route else "(no route)", status)] += 1
        (log.error if status >= 500 else log.warning)(
            "http.request_rejected",
            method=request.method,
            path=request.path,
            status=status,
            reason=message,
        )
        if request.path.startswith((*PREFIXES, KV_PATH)):
            return consul_error(status, message)
        return error(status, message)

    return answer_errors


def make_app(
    bus: Bus,
    view: RegistryView,
    settings: GatewaySettings,
    log: FilteringBoundLogger,
    *,
    agent: Agent,
    asker: Asker,
    kv_waiters: KvWaiters,
) -> web.Application:
    """The HTTP app; raises StartupError for a bad GATEWAY_TOKENS file.

    `agent`, `asker` and `kv_waiters` are the worker's children, started and stopped with
    it: the app only uses them (its own hooks start nothing)."""
    access = Access.from_file(Path(settings.tokens) if settings.tokens else None)
    if access.grants is None:
        (log.info if is_loopback(settings.bind) else log.warning)(
            "http.writes_loopback_only",
            bind=settings.bind,
            reason="GATEWAY_TOKENS is not set: HTTP writes are taken only from loopback "
            "peers" + ("" if is_loopback(settings.bind) else "; other peers get 403"),
        )
    else:
        log.info("http.tokens_loaded", tokens=len(access.grants), file=settings.tokens)
    timeout_s = settings.http_timeout_s
    errors: collections.Counter[tuple[str, int]] = collections.Counter()
    app = web.Application(middlewares=[_middleware(log, errors)], client_max_size=MAX_BODY)
    app[ERRORS] = errors
    app[AGENT] = agent
    app[ASKER] = asker
    consul = ConsulApi(
        view, agent, access, datacenter=settings.datacenter, node=socket.gethostname()
    )
    spec = document()

    async def openapi(request: web.Request) -> web.Response:
        del request
        return json(spec)

    app.add_routes(BatonApi(bus, asker, access, timeout_s=timeout_s).routes())
    app.add_routes([web.get("/v1/openapi.json", openapi)])
    app.add_routes(consul.routes())
    kv = ConsulKv(
        bus,
        kv_waiters,
        access,
        datacenter=settings.datacenter,
        timeout_s=timeout_s,
        closing=consul.closing,
    )
    app[KV] = kv
    app.add_routes(kv.routes())
    app.add_routes(PrometheusSd(view, settings.datacenter).routes())
    app.add_routes(
        console.routes(
            bus,
            view,
            asker,
            access,
            timeout_s=timeout_s,
            closing=consul.closing,
            grafana_url=settings.grafana_url,
        )
    )
    app.add_routes(unsupported.routes())  # the catch-all of /v1/: last

    async def on_shutdown(_: web.Application) -> None:
        # before aiohttp waits for handlers: blocking queries answer, event streams end
        consul.closing.set()

    app.on_shutdown.append(on_shutdown)
    return app
