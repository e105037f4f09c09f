"""A lease on one key of a JetStream KV bucket, and presence keys beside it.

The bucket's `max_age` is the lease: the server drops a key one lease after its last
write, and only then can another writer `create()` it. The holder renews with
`update(last=revision)`; a refused update means somebody else holds it now. How long a
holder may act on its lease (it must stop before the server can drop the key) is the
caller's arithmetic (services/registry/leader.py); this module does the writes and says
what each one meant, mapping every client error to one of three outcomes: written (a new
revision), refused (another writer won the race), or unreachable (no answer from the
stream's quorum in time: try again next round).

The bucket has three copies where the cluster has three nodes, else one; reads go to the
stream leader (no direct get), so nobody reads a lagging copy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import nats.errors
import nats.js.errors
from nats.js import api

from services.retry import Backoff
from services.stream.writer import lost_race

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["Lease", "Renewal"]

T = TypeVar("T")

# what a KV operation may fail with while the quorum or the connection is away
_UNREACHABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)
_NO_JETSTREAM_S = 5.0  # no responders this long: the server has no JetStream
# opening the bucket while a cluster elects its JetStream leader: retried, jittered
_OPEN_RETRY = Backoff(base_s=0.2, cap_s=1.0)


class Renewal(NamedTuple):
    """What a renewal meant: the key's new `revision`, or why there is none."""

    revision: int | None
    refused: bool = False  # another writer holds the key now
    error: str = ""  # unreachable: what failed


class Lease:
    """The lease key `key` of one bucket (`ttl` its length), and the writes on it."""

    def __init__(self, kv: KeyValue, key: str, ttl: float) -> None:
        self._kv = kv
        self.key = key
        self.ttl = ttl  # the bucket's, which is everyone's: its creator set it

    @classmethod
    async def open(
        cls, bus: Bus, bucket: str, key: str, lease_s: float, log: FilteringBoundLogger
    ) -> Lease | None:
        """The lease of `bucket` (created with `lease_s` if missing); None: no JetStream.

        Other failures (a cluster still electing its JetStream leader) are retried: a
        caller without the bucket cannot share anything.
        """
        js = bus.jetstream(timeout_s=2.0)
        retry = _OPEN_RETRY.retry()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _NO_JETSTREAM_S
        while True:
            try:
                kv = await _open(js, bucket, lease_s, log)
                ttl = (await kv.status()).ttl
                return cls(kv, key, ttl or lease_s)
            except nats.errors.NoRespondersError:
                if loop.time() > deadline:
                    return None
            except _UNREACHABLE as exc:
                log.warning("lease.bucket_unavailable", bucket=bucket, error=repr(exc))
            await retry.wait()

    async def mark(self, key: str, value: bytes, timeout: float) -> bool:
        """Write `value` to another key of the bucket (a presence); True once stored."""
        try:
            await _within(self._kv.put(key, value), timeout)
        except _UNREACHABLE:
            return False
        return True

    async def claim(self, value: bytes, timeout: float) -> int | None:
        """Create the lease key: its revision if this writer won it, else None (held by
        another, or the quorum is away: try next round)."""
        try:
            return await _within(self._kv.create(self.key, value), timeout)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # somebody holds it (nats-py has already ruled out a deleted key)
        except nats.js.errors.APIError as exc:
            if not lost_race(exc):
                return None
            return await self._win_deleted(value, timeout)
        except _UNREACHABLE:
            return None

    async def holder(self, timeout: float) -> tuple[bytes, int] | None:
        """What the lease key holds now, and at which revision; None: nothing (or no answer).

        A claim refused as held may have been refused by the caller's own earlier claim: the
        server may store a write whose answer the writer gave up waiting for.
        """
        try:
            entry = await _within(self._kv.get(self.key), timeout)
        except _UNREACHABLE:  # KeyNotFoundError and KeyDeletedError among them
            return None
        if entry.value is None or entry.revision is None:
            return None
        return entry.value, entry.revision

    async def renew(self, value: bytes, revision: int, timeout: float) -> Renewal:
        try:
            new = await _within(self._kv.update(self.key, value, last=revision), timeout)
        except _UNREACHABLE as exc:
            return Renewal(None, refused=lost_race(exc), error=repr(exc))
        return Renewal(new)

    async def release(self, revision: int, timeout: float) -> None:
        """Delete the lease key if it is still at `revision` (ours): the next writer need
        not wait for it to expire. Best effort: failing, it expires anyway."""
        with contextlib.suppress(*_UNREACHABLE):
            await _within(self._kv.delete(self.key, last=revision), timeout)

    async def _win_deleted(self, value: bytes, timeout: float) -> int | None:
        """Win the key its last holder deleted; its new revision, or None if it is held.

        A clustered stream refuses `create()` of a deleted key with 10164, which nats-py
        does not retry as it does 10071: read the delete marker and `update(last=)` it.
        """
        try:
            await _within(self._kv.get(self.key), timeout)
        except nats.js.errors.KeyDeletedError as gone:
            if gone.entry is None:
                return None
            with contextlib.suppress(*_UNREACHABLE):
                return await _within(
                    self._kv.update(self.key, value, last=gone.entry.revision), timeout
                )
        except _UNREACHABLE:
            pass
        return None


async def _within(call: Awaitable[T], timeout: float) -> T:
    """`call`, given up after `timeout` s (TimeoutError), run in the caller's own task.

    Not `asyncio.wait_for`: on Python 3.11 it runs the call as a task of its own, and when
    the caller is cancelled (a stop) while nats-py's own `wait_for` swallows that cancel
    (its reply had just come in), the task finishes later with an error nobody retrieves.
    """
    async with asyncio.timeout(timeout):
        return await call


async def _open(
    js: JetStreamContext, bucket: str, lease_s: float, log: FilteringBoundLogger
) -> KeyValue:
    try:
        kv: KeyValue | None = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        kv = None
    for replicas in (3, 1):
        if kv is not None:
            break
        config = api.KeyValueConfig(
            bucket=bucket,
            history=1,
            ttl=lease_s,
            replicas=replicas,
            storage=api.StorageType.FILE,
            direct=False,
        )
        try:
            kv = await js.create_key_value(config)
        except nats.js.errors.BadRequestError:  # it exists already, or R3 is too many
            with contextlib.suppress(nats.js.errors.BucketNotFoundError):
                kv = await js.key_value(bucket)
        except nats.js.errors.APIError as exc:  # e.g. insufficient resources for R3
            log.info("lease.bucket_replicas", bucket=bucket, replicas=replicas, error=str(exc))
    if kv is None:
        msg = f"the lease bucket {bucket} could not be created"
        raise nats.errors.Error(msg)
    return kv
