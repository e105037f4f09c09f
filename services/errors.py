"""The error tree, and the one place it meets the wire codes of the contract.

Every error Baton raises descends from `BatonError`; where Python code expects a builtin
(a bad name is a ValueError, an unknown lease a KeyError), the class is both.

    BatonError                  500  a bug, or an error with no better code
    ├── BadRequest              400  bad input: the message says what and how to fix it
    │   ├── InvalidNameError         (schemas.subjects, also ValueError) a name breaks the rule
    │   ├── DurationError            (gateway.http.params, also ValueError) not a Go duration
    │   └── UnsupportedEncoding 415  (gateway.http.bodies) a body in an encoding not decoded
    ├── Forbidden               403  not allowed
    ├── NotFound                404  unknown service or instance
    │   └── UnknownInstanceError     (registry.leases, also KeyError) no such lease
    ├── Conflict                409  revision conflict
    │   └── LostRace                 (services.stream) another writer stored first (the
    │                                governor's StaleWriteError: a concurrent change)
    ├── TooLarge                413  a value over its limit (a key's value over 512 KiB)
    ├── Unavailable             503  no instance can take the request
    │   ├── NoResponders             (client side) no worker serves that subject right now
    │   └── WriteError               (collector.writer) InfluxDB did not take a batch
    │       ├── RetryableWriteError  unreachable, timed out, 5xx or 429: send it again later
    │       └── SetupError           credentials, database or bucket: an operator must act
    ├── RequestTimeout          504  (client side) no answer within the deadline
    ├── StartupError                 (a worker, the stack) cannot start as configured: exit 2
    │   ├── SettingsError            (services.config, also ValueError) a bad variable
    │   └── NotAuthorized       403  NATS refused the credentials in NATS_URL
    └── StopRequested                (the stack) SIGINT/SIGTERM while it was still starting

`BatonError` and `BadRequest` are defined in `schemas.error_root`, the contract's own package
(it stands alone: a bad name is refused there, as a BadRequest), and are the same classes
here. Workers raise these in handlers; the bus turns them into error replies. The SDK turns
error replies back into the same classes, so callers catch one tree on both sides.
Python's own TypeError/ValueError for an API called wrongly (a programmer's bug, never
input) stay as they are.
"""

from __future__ import annotations

from schemas.error_root import BadRequest, BatonError

__all__ = [
    "BadRequest",
    "BatonError",
    "Conflict",
    "Forbidden",
    "NoResponders",
    "NotAuthorized",
    "NotFound",
    "RequestTimeout",
    "StartupError",
    "StopRequested",
    "TooLarge",
    "Unavailable",
    "error_for",
]


class Forbidden(BatonError):
    code = 403


class NotFound(BatonError):
    code = 404


class Conflict(BatonError):
    code = 409


class TooLarge(BatonError):
    code = 413


class Unavailable(BatonError):
    code = 503


class NoResponders(Unavailable):
    """Nothing is subscribed to the subject: the worker is not running or not reachable."""


class RequestTimeout(BatonError):
    """No reply within the deadline (code 504 is never sent on the wire)."""

    code = 504


class StartupError(BatonError):
    """A worker cannot start as configured (wrong credentials, a missing bucket)."""


class NotAuthorized(StartupError):
    """The NATS server refused the credentials (user, password) a worker connects with."""

    code = 403


class StopRequested(BatonError):
    """SIGINT or SIGTERM arrived while the stack was still starting: not a failure."""

    def __init__(self, message: str = "a stop was requested while starting") -> None:
        super().__init__(message)


_BY_CODE: dict[int, type[BatonError]] = {
    cls.code: cls for cls in (BadRequest, Forbidden, NotFound, Conflict, TooLarge, Unavailable)
}


def error_for(code: int, message: str) -> BatonError:
    """The exception for a wire error code; unknown codes become a plain BatonError."""
    cls = _BY_CODE.get(code, BatonError)
    err = cls(message)
    if cls is BatonError:
        err.code = code  # type: ignore[misc]  # keep the code the worker sent
    return err
