"""Consul's flap damping for one check: successes before passing, failures before critical.

A run's raw status moves the check only once enough runs in a row agree: a passing (or
warning) run counts toward `success_before_passing`, a critical one toward
`failures_before_critical`; each resets the other's count. With both at 0 every run
decides, as Consul does by default. Pure: no clock, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.checks import CheckDefinition, CheckStatus

__all__ = ["Damper"]


class Damper:
    __slots__ = ("failures", "status", "successes")

    def __init__(self, status: CheckStatus) -> None:
        self.status: CheckStatus = status
        self.successes = 0
        self.failures = 0

    def observe(self, raw: CheckStatus, check: CheckDefinition) -> CheckStatus:
        """The check's status after a run that found `raw`."""
        if raw == "critical":
            self.failures += 1
            self.successes = 0
            if self.failures >= check.failures_before_critical:
                self.status = raw
        else:
            self.successes += 1
            self.failures = 0
            if self.successes >= check.success_before_passing:
                self.status = raw
        return self.status
