"""The console's JSON reads and its event stream, from the gateway's read model.

    GET /v1/ui/overview?name=&tag=&zone=&state=&after=&limit=   services, paged, filtered
    GET /v1/ui/services/{service}                               its instances and config
    GET /v1/ui/history/{service}                                revisions with their diffs
    GET /v1/ui/workers                                          every replica from $SRV
    GET /v1/ui/events                                           server-sent events

Reads come from the read model (services/view/) except the history (the governor keeps
it) and the workers (they answer `$SRV.STATS` themselves). The event stream tells every
change of the model as it happens; the page refetches what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec
from aiohttp import web

from schemas import subjects
from schemas.balancer import STRATEGIES
from schemas.governor import ConfigHistory
from schemas.micro import Stats
from schemas.registry import ServiceList
from schemas.subjects import InvalidNameError, check_name
from services.bus import error_reply
from services.errors import BadRequest, BatonError, NotFound
from services.gateway.console import shapes
from services.gateway.http.params import parse_size
from services.gateway.http.replies import json

if TYPE_CHECKING:
    from services.bus import Bus
    from services.gateway.http.asker import Asker
    from services.view import Change, RegistryView

__all__ = ["ConsoleApi", "service_of"]

PAGE: Final = 50  # services on one overview page unless `limit` says otherwise
MAX_PAGE: Final = 1000
QUEUE: Final = 256  # changes held for one slow browser before it is told to resync
KEEPALIVE_S: Final = 15.0
RETRY_MS: Final = 500
WORKERS_WAIT_S: Final = 0.3  # replies to $SRV.STATS come within a round trip, or never
_history = msgspec.json.Decoder(ConfigHistory).decode
_services = msgspec.json.Decoder(ServiceList).decode
DASHBOARD: Final = "baton-service"  # grafana/dashboards/service.json
_EVENT_STREAM: Final = "text/event-stream"


def service_of(request: web.Request) -> str:
    """The path's service name, checked by the contract's rule."""
    try:
        return check_name(request.match_info["service"])
    except InvalidNameError as exc:
        raise BadRequest(str(exc)) from None


class ConsoleApi:
    def __init__(
        self,
        bus: Bus,
        view: RegistryView,
        asker: Asker,
        *,
        timeout_s: float,
        closing: asyncio.Event,
        grafana_url: str = "",
    ) -> None:
        self.grafana_url = grafana_url.rstrip("/")
        self.bus = bus
        self.view = view
        self.asker = asker
        self.timeout_s = timeout_s
        self.closing = closing  # set at shutdown: every event stream ends

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/ui/overview", self.overview),
            web.get("/v1/ui/services/{service}", self.service),
            web.get("/v1/ui/history/{service}", self.history),
            web.get("/v1/ui/workers", self.workers),
            web.get("/v1/ui/events", self.events),
        ]

    async def overview(self, request: web.Request) -> web.Response:
        query = request.query
        wanted = {k: query.get(k, "") for k in ("name", "tag", "zone", "state")}
        if wanted["state"] and wanted["state"] not in shapes.STATES:
            raise BadRequest(f"state {wanted['state']!r} is not one of {', '.join(shapes.STATES)}")
        limit = parse_size(query["limit"], "limit", maximum=MAX_PAGE) if "limit" in query else 0
        limit = limit or PAGE
        after = query.get("after", "")
        now = time.time()
        names = sorted(n for n in self.view.services if n > after)
        rows: list[dict[str, Any]] = []
        more = ""
        for name in names:
            state = self.view.services[name]
            if not shapes.matches(state, now, **wanted):
                continue
            if len(rows) == limit:
                more = rows[-1]["service"]
                break
            rows.append(shapes.service_row(state, now))
        return json(
            {"index": self.view.index, "services": rows, "next_after": more, "total": len(names)}
        )

    async def service(self, request: web.Request) -> web.Response:
        name = service_of(request)
        state = self.view.service(name)
        if state is None:
            raise NotFound(f"no instance of service {name!r} is registered")
        now = time.time()
        instances = [
            shapes.instance_row(state, i, now)
            for i in sorted(state.instances.values(), key=lambda i: i.instance_id)
        ]
        return json(
            {
                "index": self.view.index,
                **shapes.service_row(state, now),
                "instances": instances,
                "config": msgspec.to_builtins(state.config),
                "strategies": STRATEGIES,
                "grafana": self._dashboard(name),
            }
        )

    def _dashboard(self, service: str) -> str:
        if not self.grafana_url:
            return ""
        return f"{self.grafana_url}/d/{DASHBOARD}?var-service={quote(service)}"

    async def history(self, request: web.Request) -> web.Response:
        name = service_of(request)
        subject = subjects.history(name)
        reply = await self.asker.ask(subject, b"{}", self.timeout_s)
        err = error_reply(reply.headers, reply.data, subject)
        if err is not None:
            raise err
        return json(
            {"service": name, "revisions": shapes.history_rows(_history(reply.data).entries)}
        )

    async def workers(self, request: web.Request) -> web.Response:
        del request
        replicas = await self.bus.gather(
            subjects.srv("STATS"), _NoBody(), Stats, within=WORKERS_WAIT_S
        )
        rows = sorted(
            (msgspec.to_builtins(s) for s in replicas if s.name.startswith("baton-")),
            key=lambda r: (r["name"], r["id"]),
        )
        return json({"workers": rows, "registry_leader": await self._leader()})

    async def _leader(self) -> str:
        """The registry replica that leads, as a replica tells it ("" if none answers)."""
        with contextlib.suppress(BatonError):
            reply = await self.asker.ask(subjects.SERVICES, b"{}", self.timeout_s)
            if error_reply(reply.headers, reply.data, subjects.SERVICES) is None:
                return _services(reply.data).leader
        return ""

    async def events(self, request: web.Request) -> web.StreamResponse:
        """One stream per browser: `change` events, `resync` when it fell behind."""
        if _EVENT_STREAM not in request.headers.get("Accept", ""):
            raise BadRequest(
                "this is a server-sent event stream: send Accept: text/event-stream "
                "(the console's EventSource does)"
            )
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE)

        def tell(change: Change) -> None:
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)  # fell behind: the page refetches everything

        response = web.StreamResponse(
            headers={"Content-Type": _EVENT_STREAM, "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        unsubscribe = self.view.subscribe(tell)
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            # retry: a browser reconnects within a second of a drop (not its default 3 s)
            hello = f"retry: {RETRY_MS}\nevent: hello\ndata: {self.view.index}\n\n"
            await response.write(hello.encode())
            while not self.closing.is_set():
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getting, closing}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getting not in done:
                    getting.cancel()
                    await response.write(b": keepalive\n\n")
                    continue
                change = getting.result()
                if change is None:
                    await response.write(b"event: resync\ndata: {}\n\n")
                    continue
                data = msgspec.json.encode(
                    {
                        "kind": change.kind,
                        "service": change.service,
                        "instance_id": change.instance_id,
                        "index": change.index,
                    }
                )
                await response.write(b"event: change\ndata: " + data + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away (or the gateway stops): nothing to answer
        finally:
            unsubscribe()
            closing.cancel()
        return response


class _NoBody(msgspec.Struct, frozen=True):
    """`$SRV.STATS` takes an empty object."""
