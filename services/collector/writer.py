"""Writing line protocol to InfluxDB: one small protocol, a v1 and a v2 implementation.

    WriteError                  InfluxDB did not take a batch (an Unavailable, 503)
    ├── RetryableWriteError     unreachable, timed out, 5xx or 429: send the same batch later
    └── SetupError              credentials refused, database or bucket missing, bad name:
                                an operator must act; the message says what to do

A bad INFLUX_URL, database or bucket name is a SettingsError: the collector cannot start.

A partial write (1.x answers 400, 2.x 422) is not an error: InfluxDB stored the valid
points, so `write` returns how many it rejected, and `last_rejection` keeps the server's
message for the log. Those points are never sent again: they would be rejected forever.

What InfluxDB 1.x (checked on 1.6.7) does with a 400:
- `partial write: ... dropped=N`: N points rejected, the rest stored; parse errors beside
  it read `partial write: unable to parse '...': ... dropped=0`, one per line.
- anything else (a field type conflict inside one batch on a new field, every line
  unparseable): nothing was stored.
InfluxDB 2.x answers 400 for a malformed batch and stores none of it.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService

from services.config import SettingsError
from services.errors import Unavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from influxdb_client.client.write_api_async import WriteApiAsync

__all__ = [
    "InfluxWriter",
    "RetryableWriteError",
    "SetupError",
    "V1Writer",
    "V2Writer",
    "WriteError",
    "rejected_count",
]

_DROPPED = re.compile(r"dropped=(\d+)")
_POINTS_REJECTED = re.compile(r"(\d+)/\d+ points rejected")  # InfluxDB Cloud / 3.x
_GZIP_INLINE_BYTES = 1 << 16  # larger bodies (a full batch is ~0.5 MB) are compressed
# in a thread: zlib releases the GIL, so NATS intake goes on meanwhile


class WriteError(Unavailable):
    """InfluxDB did not take a batch; the message is a sentence for the operator."""

    retry_after_s: float | None = None  # what the server asked for (Retry-After), if anything


class RetryableWriteError(WriteError):
    """Unreachable, timed out, overloaded (5xx, 429): the same batch can be sent again."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SetupError(WriteError):
    """Credentials refused, database or bucket missing: retrying alone will not help."""


class InfluxWriter(Protocol):
    """Where the collector's batches go. Implementations never raise anything but
    `WriteError`s for what InfluxDB or the network does."""

    last_rejection: str
    """The server's message about the points the last `write` rejected; empty if none."""

    async def ensure(self) -> None:
        """Make sure the points have a place to go (create the database, check the bucket)."""
        ...

    async def write(self, lines: list[str]) -> int:
        """Write one batch; return how many points InfluxDB rejected (the rest are stored)."""
        ...

    async def aclose(self) -> None: ...


def rejected_count(message: str, lines: int) -> int:
    """Points rejected by a 400/422 answer to a write of `lines` points.

    Without "partial write" InfluxDB stored none of them. With it: the `dropped=N` counts
    plus one per line it could not parse, at least one (the count is not always given).
    """
    if "partial write" not in message:
        return lines
    counted = _POINTS_REJECTED.search(message)
    if counted:
        n = int(counted[1])
    else:
        n = sum(int(d) for d in _DROPPED.findall(message)) + message.count("unable to parse")
    return min(lines, max(1, n))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare enough to use our own backoff
        return None


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# A partial or malformed write (1.x answers 400, 2.x 400 or 422): counted, never an error.
POINTS_REJECTED = frozenset({400, 422})


@dataclass(frozen=True, kw_only=True)
class Hints:
    """What one writer tells an operator, in the errors `failure` builds for it."""

    url: str
    credentials: str  # what to check when the credentials are refused
    missing: str  # what a 404 says is missing ("" to say `what` failed)
    create: str  # how to make what is missing


def failure(
    status: int, text: str, *, what: str, hints: Hints, retry_after: str | None
) -> WriteError | None:
    """The one classification of InfluxDB's error statuses, for the v1 and v2 APIs alike:
    401/403 and 404 (and any status not named here) are a SetupError, an operator must
    act; 408, 429 and 5xx a RetryableWriteError (keeping Retry-After); 413 is None: the
    batch itself is the problem, so it is dropped and counted, not sent again. The
    statuses of rejected points (POINTS_REJECTED) are the caller's to count first."""
    said = f"({status}: {_one_line(text)})"
    if status in (401, 403):
        return SetupError(
            f"InfluxDB at {hints.url} refused the credentials {said}: {hints.credentials}"
        )
    if status == 404:
        return SetupError(f"InfluxDB at {hints.url} {hints.missing or what} {said}: {hints.create}")
    if status in (408, 429) or status >= 500:
        return RetryableWriteError(
            f"InfluxDB at {hints.url} {what} {said}", retry_after_s=_retry_after(retry_after)
        )
    if status == 413:
        return None
    return SetupError(f"InfluxDB at {hints.url} {what} {said}")


def _basic_auth(user: str, password: str) -> str:
    # by hand: aiohttp 3.14 deprecates BasicAuth, and its replacement is not in 3.9
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"INFLUX_URL={url!r}: it must start with http:// or https://")
    return url.rstrip("/")


class V1Writer:
    """InfluxDB 1.x's HTTP API (`/write`, `/query`); also served by 1.8+, 2.x with a DBRP
    mapping, and 3.x. Bodies are gzip-compressed unless `gzip=False`."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        user: str = "",
        password: str = "",
        timeout_s: float = 10.0,
        gzip: bool = True,
    ) -> None:
        if not database:
            raise SettingsError("INFLUX_DATABASE is empty; name the InfluxDB database")
        self.url = _check_url(url)
        self.database = database
        self.timeout_s = timeout_s
        self.gzip = gzip
        self.last_rejection = ""
        self.sent_bytes = 0  # request bodies as sent (compressed when gzip is on)
        self._headers = {"Authorization": _basic_auth(user, password)} if user else {}
        self._session: aiohttp.ClientSession | None = None
        self._hints = Hints(
            url=self.url,
            credentials="check the collector's InfluxDB user and password, and that the "
            f"user may write to (and at start create) database {database!r}",
            missing="",
            create="the collector creates the database at start when its user may; "
            f'or run CREATE DATABASE "{database}"',
        )

    def _http(self) -> aiohttp.ClientSession:
        # made on first use: a session belongs to the running event loop
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def _post(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | Mapping[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str, str | None]:
        """(status, the server's message or body, Retry-After) of one POST."""
        try:
            async with self._http().post(
                self.url + path, params=params, data=data, headers=headers
            ) as resp:
                body = (await resp.read()).decode("utf-8", "replace")
                status = resp.status
                header_error = resp.headers.get("X-Influxdb-Error")
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise RetryableWriteError(
                f"no answer from InfluxDB at {self.url} within {self.timeout_s:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from exc
        if status >= 300:
            body = _error_text(body) or header_error or body
        return status, body, retry_after

    async def ensure(self) -> None:
        """CREATE DATABASE (a no-op when it exists). A user without the admin privilege
        it takes (403) may still write: then an empty write checks the database is there
        and the user may write to it (1.x answers 204, 404 or 403 before it reads a body)."""
        query = f"CREATE DATABASE {_quote_ident(self.database)}"
        status, body, retry_after = await self._post("/query", data={"q": query})
        what = f"could not create database {self.database!r}"
        if status < 300:
            error = _statement_error(body)
            if not error:
                return
            raise SetupError(f"InfluxDB at {self.url} {what}: {_one_line(error)}")
        if status == 403:
            status, body, retry_after = await self._post(
                "/write", params={"db": self.database, "precision": "ns"}, data=b""
            )
            if status < 300:
                return
            what = f"refused a write to {self.database!r}, and its user may not create it"
        raise failure(
            status, body, what=what, hints=self._hints, retry_after=retry_after
        ) or SetupError(f"InfluxDB at {self.url} {what} ({status}: {_one_line(body)})")

    async def write(self, lines: list[str]) -> int:
        self.last_rejection = ""
        if not lines:
            return 0
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            if len(body) > _GZIP_INLINE_BYTES:
                body = await asyncio.to_thread(gzip.compress, body, 1, mtime=0)
            else:
                body = gzip.compress(body, 1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        self.sent_bytes += len(body)
        params = {"db": self.database, "precision": "ns"}
        status, message, retry_after = await self._post(
            "/write", params=params, data=body, headers=headers
        )
        if status < 300:
            return 0
        if status not in POINTS_REJECTED:
            what = f"refused a write to {self.database!r}"
            error = failure(status, message, what=what, hints=self._hints, retry_after=retry_after)
            if error is not None:
                raise error
        self.last_rejection = _one_line(message)
        if status in POINTS_REJECTED:
            return rejected_count(message, len(lines))
        return len(lines)  # 413: the batch itself is the problem

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_text(body: str) -> str:
    """The `error` (1.x) or `message` (2.x) of a JSON error body; empty if none."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    if isinstance(decoded, dict):
        for key in ("error", "message"):
            if isinstance(decoded.get(key), str):
                return str(decoded[key])
    return ""


def _statement_error(body: str) -> str:
    """The first error in a 1.x /query answer (`{"results": [{"error": ...}]}`)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return f"not an InfluxDB answer: {body[:200]}"
    if not isinstance(decoded, dict):
        return f"not an InfluxDB answer: {body[:200]}"
    if isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    for result in decoded.get("results") or ():
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            return str(result["error"])
    return ""


class V2Writer:
    """The v2 write API (`/api/v2/write`: InfluxDB 1.8+, 2.x, 3.x) through influxdb-client's
    async client. Its own batching and retries are not used: the Batcher owns both."""

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        *,
        timeout_s: float = 10.0,
        gzip: bool = True,
    ) -> None:
        if not bucket:
            raise SettingsError("INFLUX_BUCKET is empty; name the InfluxDB bucket")
        self.url = _check_url(url)
        self.org = org
        self.bucket = bucket
        self.timeout_s = timeout_s
        self.gzip = gzip
        self.last_rejection = ""
        self._token = token
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._where = f"bucket {bucket!r} in org {org!r}"
        self._hints = Hints(
            url=self.url,
            credentials=f"check the collector's token, and that it may write to {self._where}",
            missing=f"has no {self._where}",
            create=f"create it with `influx bucket create --name {bucket} --org {org}`, and "
            "check that the url is InfluxDB 1.8+, 2.x or 3.x (1.6 and 1.7 have no v2 API)",
        )

    def _api(self) -> tuple[InfluxDBClientAsync, WriteApiAsync]:
        # made on first use: the async client must be created inside the event loop
        if self._client is None or self._write_api is None:
            self._client = InfluxDBClientAsync(
                url=self.url,
                token=self._token,
                org=self.org,
                timeout=int(self.timeout_s * 1000),
                enable_gzip=self.gzip,
            )
            self._write_api = self._client.write_api()
        return self._client, self._write_api

    async def ensure(self) -> None:
        """A write of no points: 2.x checks the org, the bucket and the token's right to
        write to it before it reads the body. So this works with a write-only token, which
        may not list buckets. The body is one newline, not empty: influxdb-client sends
        an empty body uncompressed under `Content-Encoding: gzip`, which 2.x answers 500."""
        client, _ = self._api()
        service = WriteService(client.api_client)  # type: ignore[no-untyped-call]  # generated, unannotated
        try:
            await service.post_write_async(  # type: ignore[no-untyped-call]
                org=self.org,
                bucket=self.bucket,
                body=b"\n",
                content_type="text/plain; charset=utf-8",
                precision=WritePrecision.NS,
            )
        except ApiException as exc:
            status, message, _ = _api_error(exc)
            if status in POINTS_REJECTED:  # past the checks ("writing requires points")
                return
            self._raise(status, message, exc)
            raise SetupError(
                f"InfluxDB at {self.url} answered {status} to a write of no points: "
                f"{_one_line(message)}"
            ) from None
        except TimeoutError:
            raise self._timed_out() from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from exc

    async def write(self, lines: list[str]) -> int:
        self.last_rejection = ""
        if not lines:
            return 0
        _, api = self._api()
        try:
            await api.write(
                bucket=self.bucket,
                org=self.org,
                record=lines,
                # the generated "enum" holds plain strings, which is what write() sends
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            status, message, listed = _api_error(exc)
            if status not in POINTS_REJECTED:
                self._raise(status, message, exc)
            self.last_rejection = _one_line(message)
            if status not in POINTS_REJECTED:
                return len(lines)  # 413: the batch itself is the problem
            if listed:  # 3.x lists the rejected lines
                return min(len(lines), listed)
            return rejected_count(message, len(lines))
        except TimeoutError:
            raise self._timed_out() from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableWriteError(f"cannot reach InfluxDB at {self.url}: {exc}") from exc
        return 0

    def _timed_out(self) -> RetryableWriteError:
        return RetryableWriteError(
            f"no answer from InfluxDB at {self.url} within {self.timeout_s:g} s"
        )

    def _raise(self, status: int, message: str, exc: ApiException) -> None:
        what = f"refused a write to {self._where}"
        error = failure(status, message, what=what, hints=self._hints, retry_after=exc.retry_after)
        if error is not None:
            raise error

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]  # unannotated upstream
        self._client = self._write_api = None


def _api_error(exc: ApiException) -> tuple[int, str, int]:
    """(status, message, number of rejected lines listed) of an influxdb-client error."""
    status = int(exc.status or 0)
    raw = exc.body
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    said = exc.message
    if isinstance(said, bytes):
        said = said.decode("utf-8", "replace")
    message = _error_text(body) or str(said or "") or body or str(exc.reason or "")
    listed = 0
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("data"), list):
        listed = len(decoded["data"])
    return status, message, listed
