"""`BalancerClient`: resolve an endpoint, call it, and tell the balancer how it went.

Reports matter: the balancer counts a pick as in flight until its report arrives (matched
by the endpoint's `pick`), and latency- and load-aware strategies learn from them.

Reports are batched: a service's reports wait at most `batch_ms` (5 ms), or until
`batch_max` of them (or 32 KiB) are waiting, and go as one `CallReports` message on
`balancer.v1.reports.{service}`; every balancer replica and the collector decode one
message instead of hundreds. `batch_ms=0` sends each report alone on
`balancer.v1.report.{service}`, as before. Close the client (`async with`, or `aclose()`)
before the connection: it sends what is waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Self, TypeVar

import msgspec
import nats.errors
import structlog

from schemas import subjects
from schemas.balancer import MAX_BATCH, CallReport, Endpoint, ResolveRequest
from services.bus import Bus
from services.errors import BadRequest, NoResponders, RequestTimeout, Unavailable
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

    from nats.aio.client import Client
    from structlog.typing import FilteringBoundLogger

__all__ = ["BalancerClient"]

BATCH_BYTES = 32 * 1024  # a batch is sent at this size: well inside NATS' 64 KiB default
_encode = msgspec.json.Encoder().encode
_OPEN, _CLOSE, _COMMA = b'{"reports":[', b"]}", b","

T = TypeVar("T")
# between resolves that found no balancer (services/retry.py): a balancer resubscribes
# within ~100 ms, and clients that all lost it at once must not come back in lockstep
NO_RESPONDERS_RETRY = Backoff(base_s=0.1, cap_s=1.0)


def _subject(build: Callable[[str], str], service: str) -> str:
    # A bad name is bad input like any other: one error tree for callers to catch.
    try:
        return build(service)
    except subjects.InvalidNameError as exc:
        raise BadRequest(str(exc)) from None


class BalancerClient:
    """Resolves endpoints through `balancer.v1.resolve.{service}` and reports calls.

    ```
    async with BalancerClient(nc) as client:  # on exit, the waiting reports are sent
        async with client.call("orders", key=user_id) as ep:
            await http.get(f"http://{ep.host}:{ep.port}/orders")  # timed and reported
    ```
    """

    def __init__(
        self,
        nc: Client,
        *,
        timeout: float = 1.0,
        attempts: int = 3,
        log: FilteringBoundLogger | None = None,
        batch_ms: float = 5.0,
        batch_max: int = 256,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if batch_ms < 0 or not 1 <= batch_max <= MAX_BATCH:
            raise ValueError(
                f"batch_ms must be >= 0 and batch_max 1..{MAX_BATCH}, got {batch_ms}, {batch_max}"
            )
        self.timeout = timeout
        self.attempts = attempts
        self.log = log or structlog.get_logger()
        self.batch_s = batch_ms / 1000
        self.batch_max = batch_max
        self._bus = Bus(nc, self.log)
        # reason (timeout, no_responders) -> resolves sent again: node or replica losses seen
        self.retried: collections.Counter[str] = collections.Counter()
        self._nc = nc
        # service -> encoded reports waiting, and their size in bytes
        self._waiting: dict[str, list[bytes]] = {}
        self._bytes: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.sent = 0  # reports handed to NATS (alone or in batches)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send every report still waiting; call it before closing the connection."""
        await self.flush()
        for task in list(self._sending):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> None:
        """Send the waiting reports now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for service in list(self._waiting):
            await self._send(service)

    async def resolve(
        self,
        service: str,
        *,
        key: str | None = None,
        zone: str | None = None,
        exclude: Iterable[str] = (),
        strategy: str | None = None,
    ) -> Endpoint:
        """One endpoint of `service`, picked by the balancer.

        A resolve that times out, or finds no balancer, is sent again (up to `attempts`
        in all): the queue group hands it to another balancer replica, and a NATS node
        that died is left for another once the connection notices. Each attempt waits
        `timeout`; an answer (an endpoint or an error) is never retried.

        Raises (from `services.errors`): NotFound (unknown service), Unavailable (no
        instance can take it), BadRequest (bad name, zone or strategy), NoResponders (no
        balancer runs), RequestTimeout (none answered within `timeout`).
        """
        request = ResolveRequest(key=key, zone=zone, exclude=list(exclude), strategy=strategy)
        subject = _subject(subjects.resolve, service)
        retry = NO_RESPONDERS_RETRY.retry()
        for attempt in range(1, self.attempts):
            try:
                return await self._bus.request(subject, request, Endpoint, timeout=self.timeout)
            except (NoResponders, RequestTimeout) as exc:
                kind = "no_responders" if isinstance(exc, NoResponders) else "timeout"
                self.retried[kind] += 1
                self.log.info("resolve.retrying", service=service, attempt=attempt, reason=kind)
                if isinstance(exc, NoResponders):
                    # every balancer is between connections: give them a moment to resubscribe
                    await retry.wait()
        return await self._bus.request(subject, request, Endpoint, timeout=self.timeout)

    async def report(
        self,
        service: str,
        endpoint: Endpoint,
        latency_ms: float,
        ok: bool = True,
    ) -> None:
        """Publish a CallReport for a call made to `endpoint`; best effort, never raises
        for a connection problem (a lost report only makes the balancer's view older).
        """
        report = CallReport(
            instance_id=endpoint.instance_id,
            latency_ms=max(0.0, latency_ms),
            ok=ok,
            pick=endpoint.pick,
        )
        if not self.batch_s:
            subject = _subject(subjects.report, service)
            try:
                await self._bus.publish(subject, report)
                self.sent += 1
            except (nats.errors.Error, OSError) as exc:
                self.log.warning("report.dropped", service=service, error=repr(exc))
            return
        _subject(subjects.reports, service)  # a bad name fails here, not in the batch
        body = _encode(report)
        waiting = self._waiting.setdefault(service, [])
        waiting.append(body)
        size = self._bytes[service] = self._bytes.get(service, 0) + len(body) + 1
        if len(waiting) >= self.batch_max or size >= BATCH_BYTES:
            await self._send(service)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.batch_s, self._due)

    def _due(self) -> None:
        """The oldest waiting report has waited batch_ms: send every service's batch."""
        self._timer = None
        task = asyncio.create_task(self._send_all())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_all(self) -> None:
        for service in list(self._waiting):
            await self._send(service)

    async def _send(self, service: str) -> None:
        reports = self._waiting.pop(service, None)
        self._bytes.pop(service, None)
        if not reports:
            return
        body = _OPEN + _COMMA.join(reports) + _CLOSE
        try:
            await self._nc.publish(subjects.reports(service), body)
            self.sent += len(reports)
        except (nats.errors.Error, OSError) as exc:
            self.log.warning(
                "report.dropped", service=service, reports=len(reports), error=repr(exc)
            )

    @asynccontextmanager
    async def call(
        self,
        service: str,
        *,
        key: str | None = None,
        zone: str | None = None,
        exclude: Iterable[str] = (),
        strategy: str | None = None,
    ) -> AsyncIterator[Endpoint]:
        """Resolve, hand the endpoint to the body, and report how long it took and whether
        it raised. The body's exception (cancellation included) is re-raised after the
        report, so a failed call is never reported as ok.
        """
        endpoint = await self.resolve(
            service, key=key, zone=zone, exclude=exclude, strategy=strategy
        )
        async with self._reported(service, endpoint):
            yield endpoint

    async def call_with_retry(  # noqa: PLR0913  # resolve's options, plus the retry policy
        self,
        service: str,
        fn: Callable[[Endpoint], Awaitable[T]],
        *,
        attempts: int = 3,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        key: str | None = None,
        zone: str | None = None,
        exclude: Iterable[str] = (),
        strategy: str | None = None,
    ) -> T:
        """`await fn(endpoint)`; when it raises one of `retry_on`, try another instance.

        Each retry resolves again with every instance that failed in `exclude`. Once no
        other instance is left, or after `attempts`, the last call's error is raised.
        """
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        tried = list(exclude)
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                endpoint = await self.resolve(
                    service, key=key, zone=zone, exclude=tried, strategy=strategy
                )
            except NoResponders:
                raise
            except Unavailable:
                if last is None:
                    raise
                raise last from None  # "no other instance" hides the real failure
            try:
                async with self._reported(service, endpoint):
                    return await fn(endpoint)
            except retry_on as exc:
                last = exc
                tried.append(endpoint.instance_id)
                self.log.info(
                    "call.retrying",
                    service=service,
                    instance_id=endpoint.instance_id,
                    attempt=attempt,
                    error=repr(exc),
                )
        raise last or Unavailable(f"no attempt to call {service} was made")

    @asynccontextmanager
    async def _reported(self, service: str, endpoint: Endpoint) -> AsyncIterator[None]:
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            await self.report(service, endpoint, (time.perf_counter() - start) * 1000, ok=ok)
