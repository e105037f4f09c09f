"""The root of Baton's error tree, kept in the contract package so that the contract's
own checks (a bad name in `schemas.subjects`) raise it without importing the workers'
code. `services.errors` builds the rest of the tree on these two and documents it whole;
`code` is the wire code an error reply carries.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["BadRequest", "BatonError"]


class BatonError(Exception):
    """Every error Baton raises; 500 unless a subclass says better."""

    code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(BatonError):
    """Bad input: the message says what was wrong and how to fix it."""

    code = 400
