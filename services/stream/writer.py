"""Append-if-last-sequence: the compare-and-set every writer of a shared stream uses.

A write carries `Nats-Expected-Last-Subject-Sequence`: it is stored only if the last
record of its subject (or of `scope`, a filter, on server 2.11+) is still the one the
writer built on. Several replicas may decide the same change; one write is stored, and
every other is refused. The server says so in more than one way, all mapped here, once:

    10071  wrong last sequence (names the sequence found)   a stream, a KV update/create
    10164  wrong last sequence (no number)                  a clustered stream's leader
    KeyWrongLastSequenceError                               nats-py's KV, for 10071

Each means: another writer won the race; read the latest again and rebuild, or give up.
The writer raises `LostRace` for them, and `Unavailable` for anything else that kept the
write from being stored (no JetStream, no quorum, a timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js import api

from services.errors import Conflict, Unavailable
from services.stream.record import Record, from_stored

if TYPE_CHECKING:
    from services.bus import Bus

__all__ = ["WRONG_LAST_SEQUENCE", "LostRace", "Writer", "lost_race", "unreachable"]

WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
_EXPECTED_LAST = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
_EXPECTED_SCOPE = "Nats-Expected-Last-Subject-Sequence-Subject"  # server 2.11+: a filter


class LostRace(Conflict):
    """Another writer stored a record since the one this write was built on."""

    def __init__(self, message: str = "a concurrent change was stored first") -> None:
        super().__init__(message)


def lost_race(exc: BaseException) -> bool:
    """True if `exc` is JetStream refusing a compare-and-set: the one place that tells."""
    # nats-py's KV errors are APIErrors whose `err_code` may never have been set
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(exc, nats.js.errors.APIError)
        and getattr(exc, "err_code", None) in WRONG_LAST_SEQUENCE
    )


def unreachable(what: str, stream: str, exc: BaseException) -> Unavailable:
    return Unavailable(
        f"{what} (JetStream stream {stream}) is not reachable: {exc!r}; "
        "check that nats-server runs with JetStream enabled"
    )


class Writer:
    """Reads the last record of a subject and appends after it, on one stream.

    `what` names the store in errors ("the config store"); `timeout_s` bounds each call.
    """

    def __init__(self, bus: Bus, *, stream: str, what: str, timeout_s: float) -> None:
        self.stream = stream
        self.what = what
        self.timeout_s = timeout_s
        self.js = bus.jetstream(timeout_s=timeout_s)

    async def last(self, subject: str) -> Record | None:
        """The newest record under `subject` (a filter), None if there is none."""
        try:
            raw = await self.js.get_last_msg(self.stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, OSError) as exc:
            raise unreachable(self.what, self.stream, exc) from exc
        return from_stored(raw)

    async def append(
        self,
        subject: str,
        payload: bytes,
        *,
        after: int,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Store `payload` on `subject` if the last record of `scope` (a filter; default
        the subject) is still `after` (0: none yet); its stream sequence once stored.

        Raises LostRace if another write came first, Unavailable if it was not stored.
        """
        sent = {**(headers or {}), _EXPECTED_LAST: str(after)}
        if scope is not None:
            sent[_EXPECTED_SCOPE] = scope
        try:
            ack = await self.js.publish(subject, payload, timeout=self.timeout_s, headers=sent)
        except (nats.errors.Error, OSError) as exc:
            if lost_race(exc):
                raise LostRace from None
            raise unreachable(self.what, self.stream, exc) from exc
        return ack.seq
