"""The error tree, and the one place it meets the wire codes of the contract.

    BatonError                 500  a bug, or an error with no better code
    ├── BadRequest             400  bad input: the message says what and how to fix it
    ├── Forbidden              403  not allowed
    ├── NotFound               404  unknown service or instance
    ├── Conflict               409  revision conflict
    ├── Unavailable            503  no instance can take the request
    │   └── NoResponders            (client side) no worker serves that subject right now
    ├── RequestTimeout              (client side) no answer within the deadline
    └── StartupError                (a worker) cannot start as configured: the runner exits 2

Workers raise these in handlers; the bus turns them into error replies. The SDK turns
error replies back into the same classes, so callers catch one tree on both sides.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequest",
    "BatonError",
    "Conflict",
    "Forbidden",
    "NoResponders",
    "NotFound",
    "RequestTimeout",
    "StartupError",
    "Unavailable",
    "error_for",
]


class BatonError(Exception):
    code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(BatonError):
    code = 400


class Forbidden(BatonError):
    code = 403


class NotFound(BatonError):
    code = 404


class Conflict(BatonError):
    code = 409


class Unavailable(BatonError):
    code = 503


class NoResponders(Unavailable):
    """Nothing is subscribed to the subject: the worker is not running or not reachable."""


class RequestTimeout(BatonError):
    """No reply within the deadline (code 504 is never sent on the wire)."""

    code = 504


class StartupError(BatonError):
    """A worker cannot start as configured (wrong credentials, a missing bucket)."""


_BY_CODE: dict[int, type[BatonError]] = {
    cls.code: cls for cls in (BadRequest, Forbidden, NotFound, Conflict, Unavailable)
}


def error_for(code: int, message: str) -> BatonError:
    """The exception for a wire error code; unknown codes become a plain BatonError."""
    cls = _BY_CODE.get(code, BatonError)
    err = cls(message)
    if cls is BatonError:
        err.code = code  # type: ignore[misc]  # keep the code the worker sent
    return err
