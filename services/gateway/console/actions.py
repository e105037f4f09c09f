"""The console's writes: each one message to the governor or the registry, as `baton`
sends it (services/cli/change.py), with the token's name as the actor.

    POST /v1/ui/services/{service}/change      {instance_id?, drained?, weight?, strategy?,
                                                reason?, expected_revision?}
    POST /v1/ui/services/{service}/rollback    {to_revision, reason?, expected_revision?}
    POST /v1/ui/services/{service}/deregister  {instance_id}

A write carries its token in a header (X-Consul-Token or Authorization: Bearer), never
in a cookie, and needs the rights of the gateway's HTTP writes (services/gateway/http/
tokens.py): a config change the `admin` role, a deregistration the registry's rights; a
`reader` token changes nothing. A refusal is answered with the worker's own sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import msgspec
from aiohttp import web

from schemas import subjects
from schemas.errors import explain
from schemas.governor import ConfigChange, Rollback
from schemas.registry import Deregistration
from services.bus import error_reply
from services.errors import BadRequest
from services.gateway.console.api import service_of
from services.gateway.http.bodies import body_of
from services.gateway.http.consul_api import token_of
from services.gateway.http.replies import JSON

if TYPE_CHECKING:
    from services.gateway.http.asker import Asker
    from services.gateway.http.tokens import Access, Write

__all__ = ["ConsoleActions"]

LOOPBACK_ACTOR: Final = "console (loopback)"
_encoder = msgspec.json.Encoder()


class Change(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One setting from the page; the governor checks the values."""

    instance_id: str = ""
    drained: bool | None = None
    weight: int | None = None
    strategy: str | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    expected_revision: int | None = None


class Back(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    to_revision: int
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    expected_revision: int | None = None


class Gone(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance_id: str


T = TypeVar("T")


def _decode(request: web.Request, kind: type[T]) -> T:
    raw = body_of(request) or b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.MsgspecError as exc:
        raise BadRequest(explain(exc, raw, kind.__name__)) from None


class ConsoleActions:
    def __init__(self, asker: Asker, access: Access, *, timeout_s: float) -> None:
        self.asker = asker
        self.access = access
        self.timeout_s = timeout_s

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/ui/services/{service}/change", self.change),
            web.post("/v1/ui/services/{service}/rollback", self.rollback),
            web.post("/v1/ui/services/{service}/deregister", self.deregister),
        ]

    def _actor(self, request: web.Request, write: Write, service: str) -> str:
        grant = self.access.check(token_of(request), request.remote, write, service)
        return grant.actor if grant is not None else LOOPBACK_ACTOR

    async def _send(self, subject: str, kind: type[msgspec.Struct], **fields: Any) -> web.Response:
        """`fields` as the worker's message `kind` (checked here first), asked on `subject`;
        its reply, or its error raised with the worker's sentence."""
        try:
            msg = msgspec.convert(fields, kind)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"{exc} ({kind.__name__})") from None
        reply = await self.asker.ask(subject, _encoder.encode(msg), self.timeout_s)
        err = error_reply(reply.headers, reply.data, subject)
        if err is not None:
            raise err  # the governor's or the registry's sentence, with its status
        return web.Response(body=reply.data, content_type=JSON)

    async def change(self, request: web.Request) -> web.Response:
        service = service_of(request)
        body = _decode(request, Change)
        actor = self._actor(request, "configure", service)
        fields: dict[str, Any] = {}
        if body.strategy is not None:
            fields["strategy"] = body.strategy
        patch: dict[str, Any] = {}
        if body.drained is not None:
            patch["drained"] = body.drained
        if body.weight is not None:
            patch["weight"] = body.weight
        if patch:
            if not body.instance_id:
                raise BadRequest("a drain or a weight names its instance: send instance_id")
            fields["instances"] = {body.instance_id: patch}
        if not fields:
            raise BadRequest("nothing to change: send drained, weight or strategy")
        return await self._send(
            subjects.change(service),
            ConfigChange,
            actor=actor,
            reason=body.reason,
            expected_revision=body.expected_revision,
            **fields,
        )

    async def rollback(self, request: web.Request) -> web.Response:
        service = service_of(request)
        body = _decode(request, Back)
        actor = self._actor(request, "configure", service)
        return await self._send(
            subjects.rollback(service),
            Rollback,
            actor=actor,
            to_revision=body.to_revision,
            reason=body.reason,
            expected_revision=body.expected_revision,
        )

    async def deregister(self, request: web.Request) -> web.Response:
        service = service_of(request)
        body = _decode(request, Gone)
        self._actor(request, "register", service)
        return await self._send(
            subjects.deregister(service), Deregistration, instance_id=body.instance_id
        )
