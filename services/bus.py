"""Typed publish / request / serve over one nats-py connection.

The bus is where the contract's error rules live: a handler raises from the error tree in
`services.errors` (or fails to decode), and the bus answers with the contract's headers
and body, counts it and logs it. Nothing a handler or a payload does is raised into
nats-py, so no message can stop a worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
import nats
import nats.errors

from schemas import subjects
from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorReply, explain
from services.endpoints import Endpoint
from services.errors import (
    BadRequest,
    BatonError,
    NoResponders,
    NotAuthorized,
    RequestTimeout,
    Unavailable,
    error_for,
)
from services.natsclient import Client, drain_subscription
from services.retry import Backoff, Retry

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.client import Server
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from structlog.typing import FilteringBoundLogger

    from services.config import BusSettings
    from services.natsclient import Subscription

__all__ = [
    "Bus",
    "Handler",
    "Reconnects",
    "connect",
    "error_reply",
    "reconnect_policy",
    "refused",
    "rejection",
    "request_failure",
]

T = TypeVar("T")
R = TypeVar("R")
# A handler returns its reply: a Struct, or bytes already encoded (a hot path's cache).
# A plain function may serve too (no coroutine a message: the resolve path).
Reply = msgspec.Struct | bytes | None
Handler = Callable[[str, T], Awaitable[Reply]] | Callable[[str, T], Reply]
Hook = Callable[[], Awaitable[None]]

_encoder = msgspec.json.Encoder()
_NAMES_CACHED = 4096  # per subscription: subject -> service name, checked once
_error_decoder = msgspec.json.Decoder(ErrorReply)


def _one_line(text: str) -> str:
    # A header value must not carry CR/LF; a sentence never needs them.
    return " ".join(text.split())


class Bus:
    """Typed messaging over a connected nats-py client. Dependencies are passed in."""

    def __init__(
        self,
        nc: NatsClient,
        log: FilteringBoundLogger,
        *,
        max_payload: int = 64 * 1024,
    ) -> None:
        self.nc = nc
        self.log = log
        self.max_payload = max_payload
        # (subscription subject, code) -> messages answered or dropped with that error
        self.errors: collections.Counter[tuple[str, int]] = collections.Counter()
        self.reconnect_hooks: list[Hook] = []
        self._decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
        self._subs: list[Subscription] = []
        # one per serve/listen, with its counts: what `$SRV.INFO`/`$SRV.STATS` report
        self.endpoints: list[Endpoint] = []

    @property
    def connected(self) -> bool:
        """True while the connection is up (False while reconnecting or closed)."""
        return bool(self.nc.is_connected)

    def known_servers(self) -> int:
        """How many servers this connection knows (given, or announced by the cluster)."""
        return len({(url.hostname, url.port) for url in self.nc.servers})

    def jetstream(self, *, timeout_s: float) -> JetStreamContext:
        """A JetStream context on this connection, for services/stream only: workers use
        that package's follower, writer and lease, never JetStream directly."""
        return self.nc.jetstream(timeout=timeout_s)

    def decoder(self, kind: type[T]) -> msgspec.json.Decoder[T]:
        dec = self._decoders.get(kind)
        if dec is None:
            dec = self._decoders[kind] = msgspec.json.Decoder(kind)
        return dec

    async def publish(self, subject: str, msg: msgspec.Struct) -> None:
        await self.nc.publish(subject, _encoder.encode(msg))

    # -- bytes as they are, for relays (the gateway passes HTTP bodies through) ----------
    async def send(self, subject: str, payload: bytes, *, reply: str = "") -> None:
        """Publish `payload` as it is (a relay checked it already); raise Unavailable
        if the connection cannot take it (closed, or its reconnect buffer full)."""
        try:
            await self.nc.publish(subject, payload, reply=reply)
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot send on {subject}: {exc}") from None

    def new_inbox(self) -> str:
        """A subject no other client uses: the prefix of replies to `send(reply=...)`."""
        return str(self.nc.new_inbox())

    async def subscribe(
        self, subject: str, on_msg: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        """A plain subscription (replies to a relay's requests), confirmed live; the
        caller owns it (`Lifecycle.own`). Requests to serve go through `serve`."""
        sub = await self.nc.subscribe(subject, cb=on_msg)
        await self.confirm()
        return sub

    async def request(
        self,
        subject: str,
        msg: msgspec.Struct,
        reply_type: type[R],
        *,
        timeout: float = 2.0,
    ) -> R:
        """Send a request; return the decoded reply or raise from `services.errors`."""
        try:
            reply = await self.nc.request(subject, _encoder.encode(msg), timeout=timeout)
        except nats.errors.Error as exc:
            raise request_failure(exc, subject, timeout) from None
        err = error_reply(reply.headers, reply.data, subject)
        if err is not None:
            raise err
        return self.decoder(reply_type).decode(reply.data)

    async def gather(
        self, subject: str, msg: msgspec.Struct, reply_type: type[R], *, within: float
    ) -> list[R]:
        """Send a request that many may answer; every reply that arrives within `within`.

        A scatter: each live responder counts, so the caller waits the whole `within`
        (replies come within a round trip, or never). Error and undecodable replies are
        skipped. Raises Unavailable if the request cannot be sent.
        """
        decode = self.decoder(reply_type).decode
        replies: list[R] = []

        async def on_reply(reply: Msg) -> None:
            if error_reply(reply.headers, reply.data, subject) is None:
                with contextlib.suppress(msgspec.MsgspecError):
                    replies.append(decode(reply.data))

        inbox = self.nc.new_inbox()
        try:
            sub = await self.nc.subscribe(inbox, cb=on_reply)
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot gather replies on {subject}: {exc}") from None
        try:
            await self.nc.publish(subject, _encoder.encode(msg), reply=inbox)
            await asyncio.sleep(within)
        except nats.errors.Error as exc:
            raise Unavailable(f"cannot gather replies on {subject}: {exc}") from None
        finally:  # also when cancelled (a stop): no inbox left subscribed
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return replies

    async def serve(
        self,
        subject: str,
        kind: type[T],
        handler: Handler[T],
        *,
        queue: str = "",
        answer: bool = True,
        per_service: bool = False,
        max_payload: int | None = None,
    ) -> Subscription:
        """Decode each message on `subject` as `kind` and pass it to `handler`.

        With `per_service`, `subject` is a prefix: every service's subject under it is
        served, and the handler gets the service name (checked first, so a bad name is
        answered as such) instead of the subject.
        The handler's returned Struct (or bytes) is the reply, when the message asked.
        Errors become the contract's error reply, or a counted log line for a publish.
        `answer=False` only listens: another worker owns the replies on that subject.
        `max_payload` raises the bus's limit for this subject (the config center's values).
        """
        read = self._reader(subject, kind, per_service=per_service, limit=max_payload)
        if per_service:
            subject = subjects.every(subject)
        publish = self.nc.publish
        endpoint = self._endpoint(subject, queue, kind, replies=answer)
        now_ns = time.perf_counter_ns
        # decided once: a plain function's reply needs no await (and no coroutine made)
        is_async = inspect.iscoroutinefunction(handler)

        # The hot path of every worker: a resolve's whole budget is a few microseconds
        # beside nats-py's own cost per message, so this stays plain (the counts are two
        # int additions and two clock reads, about 0.1 us).
        async def on_msg(msg: Msg) -> None:
            endpoint.num_requests += 1
            start = now_ns()
            try:
                reply = handler(*read(msg))
                if is_async:
                    reply = await cast("Awaitable[Reply]", reply)
            except Exception as exc:  # noqa: BLE001  # sorted out in _reject; none escapes
                endpoint.processing_time += now_ns() - start
                await self._reject(msg, endpoint, exc, answer=answer)
            else:
                endpoint.processing_time += now_ns() - start
                if answer and msg.reply and reply is not None:
                    body = reply if isinstance(reply, bytes) else _encoder.encode(reply)
                    try:
                        await publish(msg.reply, body)
                    except nats.errors.Error as exc:
                        self.log.warning("bus.reply_failed", subject=msg.reply, error=repr(exc))

        return await self._subscribe(subject, queue, on_msg)

    def _endpoint(self, subject: str, queue: str, kind: type[Any], *, replies: bool) -> Endpoint:
        endpoint = Endpoint(
            subject,
            queue,
            {"payload": kind.__name__, "replies": "true" if replies else "false"},
        )
        self.endpoints.append(endpoint)
        return endpoint

    def _reader(
        self, subject: str, kind: type[T], *, per_service: bool, limit: int | None = None
    ) -> Callable[[Msg], tuple[str, T]]:
        """What a message says: (service name or subject, payload decoded as `kind`).

        Raises InvalidNameError (a BadRequest) or BadRequest, with the sentence the sender
        needs.
        """
        decode = self.decoder(kind).decode
        what = kind.__name__
        names: dict[str, str] = {}  # subject -> its checked service name
        limit = limit or self.max_payload

        def read(msg: Msg) -> tuple[str, T]:
            name = msg.subject
            if per_service:
                found = names.get(name)
                if found is None:
                    found = subjects.service_from(name, subject)
                    if len(names) >= _NAMES_CACHED:
                        names.clear()
                    names[name] = found
                name = found
            data = msg.data
            if len(data) > limit:
                raise BadRequest(f"payload is {len(data)} bytes; the limit is {limit}")
            try:
                return name, decode(data or b"{}")  # an empty payload reads as {}
            except msgspec.MsgspecError as exc:
                raise BadRequest(explain(exc, data, what)) from None
            except RecursionError:  # nested past the decoder's depth: hostile or broken
                raise BadRequest(
                    f"payload nests too deep to be a {what}; send it as the contract shows, "
                    "a few levels of JSON"
                ) from None

        return read

    async def _subscribe(
        self, subject: str, queue: str, on_msg: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        sub = await self.nc.subscribe(subject, queue=queue, cb=on_msg)
        self._subs.append(sub)
        await self.confirm()
        return sub

    async def _reject(self, msg: Msg, endpoint: Endpoint, exc: Exception, *, answer: bool) -> None:
        """Answer or log a message that failed, by what failed: the sender or our code."""
        err = rejection(exc)
        if err is not exc:  # a bug must not stop the worker
            self.log.error("bus.handler_failed", subject=msg.subject, exc_info=exc)
        await self._fail(msg, endpoint, err, answer=answer)

    async def confirm(self) -> None:
        """Return once the server has everything sent so far (a subscription is live).

        Two round trips: nats-py's flush() may write its PING ahead of a queued SUB.
        """
        if self.nc.is_connected:
            await self.nc.flush()
            await self.nc.flush()

    async def _fail(self, msg: Msg, endpoint: Endpoint, err: BatonError, *, answer: bool) -> None:
        self.errors[(endpoint.subject, err.code)] += 1
        endpoint.failed(err.code, _one_line(err.message))
        replying = answer and bool(msg.reply)
        if err.code == 500:
            log = self.log.error
        elif answer:
            log = self.log.warning
        else:  # the worker that owns the subject logs it as a warning already
            log = self.log.debug
        log(
            "bus.request_rejected" if replying else "bus.message_dropped",
            subject=msg.subject,
            code=err.code,
            reason=err.message,
        )
        if replying:
            text = _one_line(err.message)
            body = _encoder.encode(ErrorReply(code=err.code, message=text))
            headers = {ERROR_CODE_HEADER: str(err.code), ERROR_HEADER: text}
            await self._send(msg.reply, body, headers)

    async def _send(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        try:
            await self.nc.publish(subject, body, headers=headers)
        except nats.errors.Error as exc:
            self.log.warning("bus.reply_failed", subject=subject, error=repr(exc))

    async def drain(self) -> None:
        """Stop taking new messages, finishing those already received (`drain_subscription`:
        at most DRAIN_S, all subscriptions at once)."""
        subs, self._subs = self._subs, []
        await asyncio.gather(*(drain_subscription(sub) for sub in subs))

    async def respond(self, subject: str, make: Callable[[], msgspec.Struct]) -> Subscription:
        """Answer every request on `subject` with `make()`, outside the endpoints (a
        protocol's replies, such as `$SRV.PING`, are not one of the worker's services).
        A publish without a reply subject is ignored. Not queued: every process answers."""

        async def on_msg(msg: Msg) -> None:
            if msg.reply:
                await self._send(msg.reply, _encoder.encode(make()), None)

        return await self.nc.subscribe(subject, cb=on_msg)  # its caller lets go of it

    async def run_reconnect_hooks(self) -> None:
        for hook in list(self.reconnect_hooks):
            try:
                await hook()
            except Exception:  # one failing hook must not stop the others
                self.log.exception("bus.reconnect_hook_failed")

    async def listen(
        self,
        prefix: str,
        kind: type[T],
        handler: Callable[[str, T], None],
        *,
        queue: str = "",
    ) -> Subscription:
        """`serve(prefix, kind, ..., answer=False, per_service=True)` for a plain function.

        Every service's messages under `prefix` are decoded as `kind` and passed, with the
        service name, to `handler`, which must not block: no coroutine is made per message,
        for a listener that takes many thousands a second (the collector). Nothing is
        answered; a bad name or payload and a handler's error are counted in `errors` and
        logged, as `serve` does for `answer=False`.
        """
        read = self._reader(prefix, kind, per_service=True)
        subject = subjects.every(prefix)
        endpoint = self._endpoint(subject, queue, kind, replies=False)
        now_ns = time.perf_counter_ns

        async def on_msg(msg: Msg) -> None:
            endpoint.num_requests += 1
            start = now_ns()
            try:
                handler(*read(msg))
            except Exception as exc:  # noqa: BLE001  # sorted out in _reject; none escapes
                endpoint.processing_time += now_ns() - start
                await self._reject(msg, endpoint, exc, answer=False)
            else:
                endpoint.processing_time += now_ns() - start

        return await self._subscribe(subject, queue, on_msg)


# -- the error mapping: pure functions, one per direction ------------------------------
def rejection(exc: Exception) -> BatonError:
    """What a handler's exception is answered with: itself if it is in the error tree
    (a bad name is a BadRequest), else a 500 that names it (a bug, logged by the caller)."""
    if isinstance(exc, BatonError):
        return exc
    return BatonError(f"internal error: {exc!r}")


def error_reply(headers: dict[str, str] | None, data: bytes, subject: str) -> BatonError | None:
    """The error a reply carries (its code header, the sentence from the header or the
    ErrorReply body), or None for a reply that is no error."""
    if not headers or ERROR_CODE_HEADER not in headers:
        return None
    raw = headers[ERROR_CODE_HEADER]
    try:
        code = int(raw)
    except ValueError:
        return BatonError(f"a reply on {subject} has a bad {ERROR_CODE_HEADER}: {raw!r}")
    message = headers.get(ERROR_HEADER, "")
    if not message:
        try:
            message = _error_decoder.decode(data).message
        except msgspec.MsgspecError:
            message = f"error {code} on {subject}"
    return error_for(code, message)


def request_failure(exc: nats.errors.Error, subject: str, timeout: float) -> BatonError:
    """A request nats-py could not complete, as the error tree says it."""
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoResponders(f"nothing serves {subject}; is the worker running?")
    if isinstance(exc, nats.errors.TimeoutError):
        return RequestTimeout(f"no reply on {subject} within {timeout:g} s")
    if refused(exc):
        return NotAuthorized(f"NATS refused the credentials while requesting {subject}")
    return Unavailable(f"the request on {subject} failed: {exc}")


def refused(exc: BaseException) -> bool:
    """True if `exc` is NATS refusing the credentials: the one place that tells.

    nats-py raises `AuthorizationError` for a refusal on a live connection, but while it
    connects only a plain `Error` whose text quotes the server's `-ERR`.
    """
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


class Reconnects:
    """nats-py's hook before each reconnect attempt (`reconnect_to_server_handler`): which
    server, and how long to wait first. The server tried least (so a list of servers is
    tried round the list), after the policy's wait; the first attempt of an outage goes
    at once, since the outage may be a blip."""

    def __init__(self, retry: Retry) -> None:
        self.retry = retry
        self.tried = False

    def __call__(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
        server = min(servers, key=lambda s: s.reconnects)
        if not self.tried:
            self.tried = True
            return server, 0.0
        return server, self.retry.next_delay()

    def reset(self) -> None:
        """Connected again: the next outage starts afresh."""
        self.tried = False
        self.retry.reset()


def reconnect_policy(settings: BusSettings) -> Backoff:
    base = settings.reconnect_wait_s
    return Backoff(base_s=base, cap_s=max(base, settings.reconnect_max_s))


@asynccontextmanager
async def connect(
    settings: BusSettings,
    log: FilteringBoundLogger,
    *,
    name: str,
) -> AsyncIterator[Bus]:
    """A connected Bus that reconnects forever, and drains its connection on exit.

    The first connection is retried too, so workers may start before the server does.
    Every wait between attempts follows `services.retry` (jittered, NATS_RECONNECT_WAIT_S
    up to NATS_RECONNECT_MAX_S), so a fleet that lost its server does not come back in
    lockstep.
    """
    bus: Bus | None = None  # made once connected; the callbacks are given before that
    retry = reconnect_policy(settings).retry()
    reconnects = Reconnects(retry)

    closing = False

    async def on_disconnected() -> None:
        if not closing:  # a drain on exit disconnects too; that is no news
            log.warning("bus.disconnected")

    async def on_reconnected() -> None:
        reconnects.reset()
        log.info("bus.reconnected", url=str(nc.connected_url.geturl() if nc.connected_url else ""))
        if bus is not None:
            await bus.run_reconnect_hooks()

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.DrainTimeoutError):  # say who held the exit up
            busy = [sub.subject for sub in nc._subs.values()]  # noqa: SLF001  # no public list
            log.warning("bus.drain_timeout", waited_s=settings.drain_timeout_s, busy=busy)
            return
        log.warning("bus.error", error=repr(exc))

    nc = await _first_connect(
        settings,
        log,
        name=name,
        retry=retry,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        error_cb=on_error,
        reconnect_to_server_handler=reconnects,
    )
    retry.reset()
    log.info("bus.connected", url=settings.url, name=name)
    bus = Bus(nc, log, max_payload=settings.max_payload)
    try:
        yield bus
    finally:
        closing = True
        try:
            await nc.drain()
        except nats.errors.Error:  # reconnecting or closed: nothing to drain, only to close
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()


async def _first_connect(
    settings: BusSettings,
    log: FilteringBoundLogger,
    *,
    name: str,
    retry: Retry,
    error_cb: Callable[[Exception], Awaitable[None]],
    **callbacks: Any,
) -> Client:
    """Connect, retrying while the server is not there, but not when it refuses us.

    nats-py retries a first connection by itself, sleeping `reconnect_time_wait` between
    tries and telling only `error_cb`; so `error_cb` sets that wait from the policy
    before each next try, and each attempt runs beside a watch for a refusal.
    """
    refused_event = asyncio.Event()
    nc = Client()
    first = [True]  # until connected: later errors are the caller's

    async def on_error(exc: Exception) -> None:
        if refused(exc):
            refused_event.set()
        elif first[0]:  # nats-py sleeps this long before its next try
            nc.options["reconnect_time_wait"] = retry.next_delay()
            log.warning(
                "bus.connect_failed", url=settings.url, attempt=retry.attempts, error=repr(exc)
            )
            return
        await error_cb(exc)

    while True:
        connecting = asyncio.ensure_future(
            nc.connect(
                settings.servers,  # a cluster's list: nats-py fails over between them
                name=name,
                max_reconnect_attempts=-1,  # nats-py gives up after 60 by default
                reconnect_time_wait=settings.reconnect_wait_s,  # type: ignore[arg-type]  # float works
                connect_timeout=settings.connect_timeout_s,  # type: ignore[arg-type]
                pending_size=settings.pending_bytes,
                ping_interval=settings.ping_interval_s,  # type: ignore[arg-type]  # float works
                max_outstanding_pings=settings.max_outstanding_pings,
                drain_timeout=settings.drain_timeout_s,  # type: ignore[arg-type]  # float works
                error_cb=on_error,
                **callbacks,
            )
        )
        refusal = asyncio.ensure_future(refused_event.wait())
        await asyncio.wait({connecting, refusal}, return_when=asyncio.FIRST_COMPLETED)
        refusal.cancel()
        if refused_event.is_set():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                await connecting
            await nc.close()
            raise NotAuthorized(
                "NATS refused the credentials in NATS_URL; check the user and password "
                "(nats://user:pass@host:port) against the server's authorization"
            )
        try:
            connecting.result()
        except (OSError, nats.errors.Error) as exc:
            log.warning(
                "bus.connect_failed", url=settings.url, attempt=retry.attempts + 1, error=repr(exc)
            )
            await retry.wait()
            nc = Client()
        else:
            first[0] = False
            return nc
