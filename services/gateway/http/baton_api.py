"""Baton's own API over HTTP: the NATS contract for clients without a NATS library.

Each route is one subject; the body is the subject's payload, the reply its reply, and a
contract error its HTTP status with the same `{"code", "message"}` body:

    GET  /v1/resolve/{service}?key=&zone=&exclude=&strategy=   balancer.v1.resolve
    POST /v1/report/{service}          (CallReport)            balancer.v1.report
    POST /v1/register/{service}        (Registration)          registry.v1.register
    POST /v1/heartbeat/{service}       (Heartbeat)             registry.v1.heartbeat
    POST /v1/deregister/{service}      (Deregistration)        registry.v1.deregister
    GET  /v1/instances/{service}?after=&limit=                 registry.v1.instances
    GET  /v1/services                                          registry.v1.services
    GET  /v1/config/{service}                                  governor.v1.config
    GET  /v1/history/{service}                                 governor.v1.history

Replies are passed through as the worker encoded them (no decode and re-encode on the
resolve path); requests are decoded first, so a bad one is answered here with the
sentence the worker would have sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from aiohttp import web

from schemas import subjects
from schemas.balancer import CallReport, ResolveRequest
from schemas.errors import explain
from schemas.registry import Deregistration, Empty, Heartbeat, InstancesQuery, Registration
from schemas.subjects import InvalidNameError, check_name
from services.bus import error_reply
from services.errors import BadRequest
from services.gateway.http.bodies import body_of
from services.gateway.http.consul_api import token_of
from services.gateway.http.params import flag, parse_size
from services.gateway.http.replies import JSON

if TYPE_CHECKING:
    from services.bus import Bus
    from services.gateway.http.asker import Asker
    from services.gateway.http.tokens import Access, Write

__all__ = ["BatonApi"]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_EMPTY: Final = b"{}"


_CHECKED_MAX: Final = 4096  # service names remembered as checked
MAX_LIMIT: Final = 100_000  # the registry's own bound on a page (InstancesQuery.limit)


def _convert(raw: dict[str, Any], kind: type[T]) -> T:
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise BadRequest(explain(exc, _encoder.encode(raw), kind.__name__)) from None


class BatonApi:
    def __init__(self, bus: Bus, asker: Asker, access: Access, *, timeout_s: float) -> None:
        self.bus = bus
        self.asker = asker
        self.access = access
        self.timeout_s = timeout_s
        self._decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
        self._checked: set[str] = set()  # names that passed the rule: one look-up after

    def _service(self, request: web.Request) -> str:
        name = request.match_info["service"]
        if name in self._checked:
            return name
        try:
            check_name(name)
        except InvalidNameError as exc:
            raise BadRequest(str(exc)) from None
        if len(self._checked) >= _CHECKED_MAX:
            self._checked.clear()
        self._checked.add(name)
        return name

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/resolve/{service}", self.resolve),
            web.post("/v1/report/{service}", self.report),
            web.post("/v1/register/{service}", self.register),
            web.post("/v1/heartbeat/{service}", self.heartbeat),
            web.post("/v1/deregister/{service}", self.deregister),
            web.get("/v1/instances/{service}", self.instances),
            web.get("/v1/services", self.services),
            web.get("/v1/config/{service}", self.config),
            web.get("/v1/history/{service}", self.history),
        ]

    # -- the NATS side -------------------------------------------------------------------
    async def _ask(self, subject: str, payload: bytes) -> web.Response:
        """Request on `subject`; the reply's bytes as the body, or its error raised."""
        reply = await self.asker.ask(subject, payload, self.timeout_s)
        err = error_reply(reply.headers, reply.data, subject)  # the bus's one mapping
        if err is not None:
            raise err
        return web.Response(body=reply.data, content_type=JSON)

    async def _body(self, request: web.Request, kind: type[T]) -> tuple[bytes, T]:
        raw = body_of(request)
        decoder = self._decoders.get(kind)
        if decoder is None:
            decoder = self._decoders[kind] = msgspec.json.Decoder(kind)
        try:
            return raw, decoder.decode(raw or _EMPTY)
        except msgspec.MsgspecError as exc:
            raise BadRequest(explain(exc, raw, kind.__name__)) from None

    def _allow(self, request: web.Request, write: Write, service: str) -> None:
        self.access.check(token_of(request), request.remote, write, service)

    # -- balancer ------------------------------------------------------------------------
    async def resolve(self, request: web.Request) -> web.Response:
        service = self._service(request)
        query = request.query
        if query:
            raw: dict[str, Any] = {}
            for name in ("key", "zone", "strategy"):
                if name in query:
                    raw[name] = query[name]
            if "exclude" in query:
                raw["exclude"] = [i for v in query.getall("exclude") for i in v.split(",") if i]
            if "track" in query:
                raw["track"] = flag(query, "track")
            payload = _encoder.encode(_convert(raw, ResolveRequest))
        else:
            payload = _EMPTY
        return await self._ask(subjects.resolve(service), payload)

    async def report(self, request: web.Request) -> web.Response:
        service = self._service(request)
        raw, _ = await self._body(request, CallReport)
        self._allow(request, "report", service)
        await self.bus.send(subjects.report(service), raw or _EMPTY)
        return web.Response(status=204)

    # -- registry ------------------------------------------------------------------------
    async def register(self, request: web.Request) -> web.Response:
        service = self._service(request)
        raw, _ = await self._body(request, Registration)
        self._allow(request, "register", service)
        return await self._ask(subjects.register(service), raw)

    async def heartbeat(self, request: web.Request) -> web.Response:
        service = self._service(request)
        raw, _ = await self._body(request, Heartbeat)
        self._allow(request, "register", service)
        return await self._ask(subjects.heartbeat(service), raw)

    async def deregister(self, request: web.Request) -> web.Response:
        service = self._service(request)
        raw, _ = await self._body(request, Deregistration)
        self._allow(request, "register", service)
        return await self._ask(subjects.deregister(service), raw)

    async def instances(self, request: web.Request) -> web.Response:
        service = self._service(request)
        raw: dict[str, Any] = {}
        if "after" in request.query:
            raw["after"] = request.query["after"]
        if "limit" in request.query:
            raw["limit"] = parse_size(request.query["limit"], "limit", maximum=MAX_LIMIT)
        query = _convert(raw, InstancesQuery)
        return await self._ask(subjects.instances(service), _encoder.encode(query))

    async def services(self, request: web.Request) -> web.Response:
        del request
        return await self._ask(subjects.SERVICES, _encoder.encode(Empty()))

    # -- governor (read-only over HTTP: changes go through `baton` or NATS) -------------
    async def config(self, request: web.Request) -> web.Response:
        return await self._ask(subjects.config(self._service(request)), _EMPTY)

    async def history(self, request: web.Request) -> web.Response:
        return await self._ask(subjects.history(self._service(request)), _EMPTY)
