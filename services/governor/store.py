"""The governor's side of the config log: read the latest entry, append with CAS, history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from schemas import subjects
from services.configlog import decode_entry
from services.errors import Unavailable

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from schemas.governor import ConfigApplied

__all__ = ["ConfigStore", "StaleWriteError"]

# JetStream's error codes when the CAS header does not hold: 10071 names the sequence;
# a clustered stream's leader may answer 10164 ("wrong last sequence", no number) instead
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
_encode = msgspec.json.Encoder().encode


class StaleWriteError(Exception):
    """Another change was stored since the entry this one was built on."""


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(
        f"the config store (JetStream stream {subjects.CONFIG_STREAM}) is not reachable: "
        f"{exc!r}; check that nats-server runs with JetStream enabled"
    )


class ConfigStore:
    def __init__(self, js: JetStreamContext, *, timeout_s: float) -> None:
        self.js = js
        self.timeout_s = timeout_s

    async def latest(self, service: str) -> tuple[ConfigApplied | None, int]:
        """The service's newest entry and its stream sequence (None, 0 if never set)."""
        try:
            raw = await self.js.get_last_msg(subjects.CONFIG_STREAM, subjects.config_log(service))
        except nats.js.errors.NotFoundError:
            return None, 0
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        assert raw.data is not None  # noqa: S101  # a stored entry always has a body
        return decode_entry(raw.data), raw.seq or 0

    async def append(self, entry: ConfigApplied, after_seq: int) -> int:
        """Store `entry` if the service's last entry is still `after_seq`; its sequence.

        Returns once JetStream has stored it (acknowledged), so it survives restarts.
        """
        headers = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(after_seq)}
        try:
            ack = await self.js.publish(
                subjects.config_log(entry.service),
                _encode(entry),
                timeout=self.timeout_s,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise StaleWriteError from None
            raise _unavailable(exc) from exc
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc
        return ack.seq

    async def history(self, service: str) -> list[ConfigApplied]:
        """Every stored entry of the service, oldest first."""
        entries: list[ConfigApplied] = []
        subject = subjects.config_log(service)
        seq = 1
        while True:
            try:
                raw = await self.js.get_msg(subjects.CONFIG_STREAM, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return entries
            except nats.errors.Error as exc:
                raise _unavailable(exc) from exc
            assert raw.data is not None  # noqa: S101
            entries.append(decode_entry(raw.data))
            seq = (raw.seq or seq) + 1
