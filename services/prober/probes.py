"""One run of a check against its target: HTTP, TCP or gRPC, with Consul's verdicts.

Every probe is bounded: the whole run (connect, redirects, headers, body) ends by the
check's timeout; at most OUTPUT_LIMIT bytes of a body are read (a 100 MB answer costs
4 KiB), redirects stop after `max_redirects`, keep-alive is off (as Consul: a probe sees
a fresh connection, and no idle socket is held per target). A probe never raises: every
failure is a critical outcome whose output says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, NamedTuple, Self

import aiohttp
from multidict import CIMultiDict

from schemas.checks import OUTPUT_LIMIT, grpc_target

if TYPE_CHECKING:
    from schemas.checks import CheckDefinition, CheckStatus

__all__ = ["Outcome", "Probes", "http_status"]


class Outcome(NamedTuple):
    status: CheckStatus
    output: str
    duration_ms: float


def http_status(code: int) -> CheckStatus:
    """Consul's verdict on an HTTP status: 2xx passing, 429 warning, else critical."""
    if 200 <= code < 300:
        return "passing"
    if code == 429:
        return "warning"
    return "critical"


def _cut(text: str) -> str:
    raw = text.encode(errors="replace")
    if len(raw) <= OUTPUT_LIMIT:
        return text
    return raw[:OUTPUT_LIMIT].decode(errors="ignore")


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Probes:
    """The probes, sharing one HTTP session; enter it to open, leave it to close."""

    def __init__(self, *, max_redirects: int = 10) -> None:
        self.max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # a small compressed body must not inflate without bound
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "Baton prober"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, check: CheckDefinition) -> Outcome:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(check.timeout_s):
                if check.kind == "http":
                    status, output = await self._http(check)
                elif check.kind == "tcp":
                    status, output = await _tcp(check.target)
                elif check.kind == "grpc":
                    status, output = await _grpc(check, check.timeout_s)
                else:  # ttl checks are the registry's leases: nothing to probe
                    status, output = "passing", ""
        except Exception as exc:  # noqa: BLE001  # any failure of the target is its verdict
            status, output = "critical", _target_error(check, exc)
        return Outcome(status, _cut(output), (time.perf_counter() - start) * 1000)

    async def _http(self, check: CheckDefinition) -> tuple[CheckStatus, str]:
        if self._session is None:
            raise RuntimeError("the prober's HTTP session is not open")
        headers: CIMultiDict[str] = CIMultiDict()
        for name, values in check.headers.items():
            for value in values:
                headers.add(name, value)
        async with self._session.request(
            check.method,
            check.target,
            headers=headers,
            data=check.body.encode() if check.body else None,
            ssl=not check.tls_skip_verify,  # aiohttp: True verifies, False accepts any
            max_redirects=self.max_redirects,
            timeout=aiohttp.ClientTimeout(total=check.timeout_s),
        ) as response:
            body = await _read_some(response.content, OUTPUT_LIMIT)
            text = body.decode(response.charset or "utf-8", errors="replace")
            reason = response.reason or ""
            output = (
                f"HTTP {check.method} {check.target}: {response.status} {reason} Output: {text}"
            )
            return http_status(response.status), output


def _target_error(check: CheckDefinition, exc: Exception) -> str:
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"{check.kind} {check.target}: more than the allowed redirects"
    return f"{check.kind} {check.target}: {_error(exc)}"


async def _read_some(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most `limit` bytes of a body; the rest is never read (the connection closes)."""
    out = bytearray()
    while len(out) < limit:
        chunk = await content.read(limit - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def _tcp(target: str) -> tuple[CheckStatus, str]:
    host, _, port = target.rpartition(":")
    _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "passing", f"TCP connect {target}: Success"


async def _grpc(check: CheckDefinition, timeout_s: float) -> tuple[CheckStatus, str]:
    # imported here: the prober runs without grpcio, failing only its gRPC checks
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    hostport, service = grpc_target(check.target)
    if check.grpc_use_tls:
        channel = grpc.aio.secure_channel(hostport, grpc.ssl_channel_credentials())
    else:
        channel = grpc.aio.insecure_channel(hostport)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return "critical", f"gRPC {check.target}: {exc.code().name}: {exc.details()}"
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
    return ("passing" if ok else "critical"), f"gRPC {check.target}: {state}"
