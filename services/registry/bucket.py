"""The registry's KV bucket on JetStream: opened or created, and a deleted key won back.

`BATON_REGISTRY` holds the leader lease (key `leader`) and each follower's presence
(`replica.{id}`). Its `max_age` is the lease: the server drops a key one lease after its
last write. Three copies where the cluster has three nodes, else one; reads go to the
stream leader (no direct get), so no replica reads a lagging copy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue
    from structlog.typing import FilteringBoundLogger

__all__ = ["KV_ERRORS", "open_bucket", "win_deleted"]

# what a KV operation may fail with while the quorum or the connection is away
KV_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)
_NO_JETSTREAM_S = 5.0  # no responders this long: the server has no JetStream


async def open_bucket(nc: Client, lease_s: float, log: FilteringBoundLogger) -> KeyValue | None:
    """The bucket, created if missing; None if the server has no JetStream.

    Other failures (a cluster still electing its JetStream leader) are retried: a
    registry replica without the bucket cannot share the truth.
    """
    js = nc.jetstream(timeout=2.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _NO_JETSTREAM_S
    while True:
        try:
            return await _open(js, lease_s, log)
        except nats.errors.NoRespondersError:
            if loop.time() > deadline:
                return None
        except KV_ERRORS as exc:
            log.warning("registry.bucket_unavailable", error=repr(exc))
        await asyncio.sleep(0.2)


async def _open(js: JetStreamContext, lease_s: float, log: FilteringBoundLogger) -> KeyValue:
    try:
        kv: KeyValue | None = await js.key_value(subjects.REGISTRY_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        kv = None
    for replicas in (3, 1):
        if kv is not None:
            break
        config = api.KeyValueConfig(
            bucket=subjects.REGISTRY_BUCKET,
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
                kv = await js.key_value(subjects.REGISTRY_BUCKET)
        except nats.js.errors.APIError as exc:  # e.g. insufficient resources for R3
            log.info("registry.bucket_replicas", replicas=replicas, error=str(exc))
    if kv is None:
        msg = "the registry's lease bucket could not be created"
        raise nats.errors.Error(msg)
    return kv


async def win_deleted(kv: KeyValue, value: bytes, timeout: float) -> int | None:
    """Win the leader key its last holder deleted; its new revision, or None if it is held.

    A clustered stream refuses `create()` of a deleted key with 10164, which nats-py
    does not retry as it does 10071: read the delete marker and `update(last=)` it.
    """
    try:
        await asyncio.wait_for(kv.get(subjects.LEADER_KEY), timeout)
    except nats.js.errors.KeyDeletedError as gone:
        if gone.entry is None:
            return None
        with contextlib.suppress(*KV_ERRORS):
            return await asyncio.wait_for(
                kv.update(subjects.LEADER_KEY, value, last=gone.entry.revision), timeout
            )
    except KV_ERRORS:
        pass
    return None
