"""How a command talks to Baton: one NATS connection, one request, the reply as sent.

Every failure ends here as a `Failure`: one line on stderr and the exit code scripts test
(with `--json`, that line is `{"code": ..., "message": ...}`: the contract's code and
sentence; 503 NATS unreachable or nothing serving, 504 no reply in time, 401/403 NATS
refused the user or a subject, 400 a usage error).

    0  done
    1  Refused: a worker answered with an error (the contract's 4xx/5xx code and sentence),
       or NATS refused the credentials or a subject (permissions)
    2  usage error (click's own)
    3  Unanswered: NATS unreachable, no worker serving the subject, or no reply in time
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec
import nats
import nats.errors

from schemas.errors import ErrorReply
from services import logs
from services.bus import Bus, Reconnects, refused
from services.errors import BatonError, NoResponders, RequestTimeout
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from typing import IO

    from nats.aio.client import Client

__all__ = ["Failure", "Link", "Refused", "Session", "Unanswered", "json_error"]

T = TypeVar("T")


class Failure(click.ClickException):
    """An error a person reads as `baton: <sentence>`, with the exit code scripts test,
    and the contract's code for `--json` (`reason`: the sentence without the code)."""

    code = 500

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.reason = reason or message

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"baton: {self.format_message()}", file=file, err=file is None)

    def as_json(self) -> str:
        return json_error(self.code, self.reason)


def json_error(code: int, message: str) -> str:
    """An error for scripts, as the workers' error body: `{"code": 404, "message": "..."}`."""
    return msgspec.json.encode(ErrorReply(code=code, message=message)).decode()


class Refused(Failure):
    """A worker answered with an error, or NATS refused the user or a subject."""

    exit_code = 1


class Unanswered(Failure):
    """Nothing answered: NATS is unreachable, or no worker replied."""

    exit_code = 3
    code = 503


def _worker(subject: str) -> str:
    return subject.split(".", 1)[0]


def redact(url: str) -> str:
    """The URL without its password, for messages: nats://user:***@host:4222."""
    return re.sub(r"(//[^:/@]+:)[^@/]*@", r"\1***@", url)


@dataclass
class Link:
    """A connection, and what the server refused on it (nats-py only tells error_cb)."""

    nc: Client
    refusal: asyncio.Future[str] = field(default_factory=asyncio.Future)

    def refuse(self, text: str) -> None:
        if not self.refusal.done():
            self.refusal.set_result(text)

    def forgive(self) -> None:
        """Forget a refusal already reported, to send something else on the link."""
        if self.refusal.done():
            self.refusal = asyncio.get_running_loop().create_future()

    async def unless_refused(self, call: Awaitable[T]) -> T:
        """`await call`, or raise `Refused` as soon as NATS refuses a subject instead."""
        task = asyncio.ensure_future(call)
        either: set[asyncio.Future[Any]] = {task, self.refusal}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self.refusal.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BatonError):
                await task
            reason = (
                f"NATS refused it: {self.refusal.result()}; the NATS user in "
                "--nats-url / NATS_URL lacks that right (infra/nats-auth.conf lists them)"
            )
            raise Refused(f"403 {reason}", code=403, reason=reason)
        return task.result()


@dataclass(frozen=True)
class Session:
    """The global options: where NATS is, how to print, how long to wait for an answer."""

    url: str
    json: bool
    timeout: float

    @asynccontextmanager
    async def connect(
        self,
        *,
        follow: bool = False,
        disconnected: Callable[[], Awaitable[None]] | None = None,
        reconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Link]:
        """A NATS connection, closed on exit. `follow` (watch) reconnects forever once
        connected; a one-shot command gives up at once, as a request would time out anyway.
        """
        errors: list[Exception] = []
        link: list[Link] = []

        async def on_error(exc: Exception) -> None:  # instead of nats-py logging it
            errors.append(exc)
            if link and "permissions violation" in str(exc).lower():
                link[0].refuse(str(exc))

        # `watch` reconnects by the one retry policy (services/retry.py), as workers do
        reconnects = Reconnects(Backoff(base_s=0.5, cap_s=5.0).retry())

        async def on_reconnected() -> None:
            reconnects.reset()
            if reconnected is not None:
                await reconnected()

        options: dict[str, Any] = {"error_cb": on_error, "reconnected_cb": on_reconnected}
        if disconnected is not None:
            options["disconnected_cb"] = disconnected
        if follow:
            options["reconnect_to_server_handler"] = reconnects
        # nats-py retries a first connection as often as later ones: `follow` retries until
        # the deadline below, a one-shot command gives up after one more try.
        options |= (
            {
                "max_reconnect_attempts": -1,
                "reconnect_time_wait": 0.5,
                # leave a cut-off node for another within seconds (nats-py's default: 4 min)
                "ping_interval": 2,
                "max_outstanding_pings": 2,
            }
            if follow
            else {"max_reconnect_attempts": 1, "reconnect_time_wait": 0.05}
        )
        servers = [url.strip() for url in self.url.split(",") if url.strip()]
        try:
            nc = await asyncio.wait_for(
                nats.connect(servers, name="baton-cli", connect_timeout=self.timeout, **options),
                self.timeout,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise self._unreachable([*errors, exc]) from None
        link.append(Link(nc))
        try:
            yield link[0]
        finally:
            await nc.close()

    def _unreachable(self, errors: list[Exception]) -> Failure:
        """Why connecting failed: refused credentials, else the first error seen."""
        where = redact(self.url)
        for error in errors:
            if refused(error):
                return Refused(
                    f"NATS at {where} refused the credentials ({error}); give the user and "
                    "password in --nats-url / NATS_URL as nats://user:password@host:port",
                    code=401,
                )
        cause = errors[0]
        return Unanswered(
            f"cannot connect to NATS at {where} ({cause or type(cause).__name__}); "
            "is nats-server running? (--nats-url / NATS_URL says where)"
        )

    def _no_answer(self, subject: str, exc: BatonError) -> Failure:
        worker = _worker(subject)
        if isinstance(exc, NoResponders):
            return Unanswered(
                f"no {worker} answers on {subject}; is it running? (python -m services.{worker})"
            )
        if isinstance(exc, RequestTimeout):
            return Unanswered(
                f"the {worker} did not answer on {subject} within {self.timeout:g} s; "
                "is it running, and not stuck? (--timeout waits longer)",
                code=504,
            )
        return Refused(f"{exc.code} {exc.message}", code=exc.code, reason=exc.message)

    async def request(self, subject: str, msg: msgspec.Struct) -> bytes:
        """The reply's JSON, exactly as the worker sent it, or a `Failure`."""
        async with self.connect() as link:
            return await self.ask(link, subject, msg)

    async def ask(self, link: Link, subject: str, msg: msgspec.Struct) -> bytes:
        """`request` on a connection already open (a command that asks twice)."""
        bus = Bus(link.nc, logs.get_logger("cli"))
        call = bus.request(subject, msg, msgspec.Raw, timeout=self.timeout)
        try:
            raw = await link.unless_refused(call)
        except BatonError as exc:
            raise self._no_answer(subject, exc) from None
        return bytes(raw)

    def show(
        self,
        subject: str,
        msg: msgspec.Struct,
        kind: type[T],
        render: Callable[[T], str],
    ) -> None:
        """Request, then print the reply: as sent with `--json`, else `render`ed."""
        self.print_reply(asyncio.run(self.request(subject, msg)), subject, kind, render)

    def print_reply(
        self, raw: bytes, subject: str, kind: type[T], render: Callable[[T], str]
    ) -> None:
        """The reply as sent with `--json`, else decoded as `kind` and `render`ed."""
        if self.json:  # as sent: fields this version of Baton does not know included
            click.echo(raw.decode())
            return
        try:
            reply = msgspec.json.decode(raw, type=kind)
        except msgspec.ValidationError as exc:
            raise Refused(
                f"the {_worker(subject)} answered {subject} with something that is not a "
                f"{kind.__name__} ({exc}); --json shows it as sent",
                code=502,
            ) from None
        click.echo(render(reply))
