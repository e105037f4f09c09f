"""The streams Baton keeps, described in its own terms, and created where missing.

A `StreamSpec` says what a worker needs of a stream (its subjects, the records kept per
subject, its copies, a republish); `ensure_stream` creates it or, where it exists with
other settings, brings it to the spec if the caller's `outdated` says so. Only the owner
of a stream's limits updates it (the governor its config log, the balancer its ejection
log); a reader that starts first creates it, and never changes it later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import nats.js.errors
from nats.js import api

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.bus import Bus

__all__ = ["StreamSpec", "cluster_replicas", "ensure_stream", "never", "stream_spec"]


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A file-stored stream with limits retention: the oldest record of a subject goes
    first once `per_subject` are kept."""

    name: str
    subjects: tuple[str, ...]
    per_subject: int
    replicas: int = 1
    duplicate_window_s: float = 0.0  # 0: the server's default (2 minutes)
    republish: tuple[str, str] | None = None  # (source filter, destination): stored is sent


def cluster_replicas(bus: Bus) -> int:
    """Copies of a stream to ask for when no one said: 3 on a cluster of 3 or more nodes
    (the servers this connection knows, given or announced), else 1.

    A reader that starts before a stream's owner creates it with this many, so the owner
    never has to scale it up later (a stream scaled up from 1 copy is without quorum until
    the new copies catch up, which a node loss right then turns into a stall).
    """
    return 3 if bus.known_servers() >= 3 else 1


def never(_: StreamSpec) -> bool:
    """For `ensure_stream(outdated=)`: a reader leaves a stream as its owner made it."""
    return False


def _always(_: StreamSpec) -> bool:
    return True


async def ensure_stream(
    bus: Bus,
    spec: StreamSpec,
    *,
    outdated: Callable[[StreamSpec], bool] = _always,
    timeout_s: float = 5.0,
) -> None:
    """Create the stream if missing; if it exists with other settings and `outdated(what
    it is)` says so, bring it to `spec`. Raises nats-py's errors (the callers retry)."""
    js = bus.jetstream(timeout_s=timeout_s)
    config = api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=spec.per_subject,
        discard=api.DiscardPolicy.OLD,
        num_replicas=spec.replicas,
        allow_direct=True,
        duplicate_window=spec.duplicate_window_s,
        republish=None if spec.republish is None else api.RePublish(*spec.republish),
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:  # exists with other settings
        info = await js.stream_info(spec.name)
        if outdated(stream_spec(info.config)):
            await js.update_stream(config)


def stream_spec(config: api.StreamConfig) -> StreamSpec:
    """What a stream the server has is, as a spec (the fields Baton sets)."""
    republish = config.republish
    return StreamSpec(
        name=config.name or "",
        subjects=tuple(config.subjects or ()),
        per_subject=config.max_msgs_per_subject,
        replicas=config.num_replicas or 1,
        duplicate_window_s=config.duplicate_window,
        republish=None if republish is None else (republish.src or "", republish.dest or ""),
    )
