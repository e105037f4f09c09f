"""What the registry hears of a check: its transitions, and a refresh now and then.

Consul's agents send their servers only changes of status, plus anti-entropy; so does the
prober. Every run still goes on `prober.v1.results.{service}` (the collector writes each
to InfluxDB), but the registry follows `prober.v1.transitions.{service}` only, which gets
a result when:

- this replica has told the registry nothing of the check yet: a new check, or one it
  has just taken over from another replica (its first run says where the check stands);
- the check's status differs from the one this replica last told (a transition; its
  output travels with it, an output change alone is not sent);
- `refresh_s` passed since it last told (anti-entropy: a lost transition, or a registry
  replica that started late, heals within that time).

At 10,000 checks every 10 s that is a steady 10,000 / refresh_s messages a second to each
registry replica instead of 1,000, and a burst only when checks really change. Pure: the
clock is passed in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.checks import CheckStatus

__all__ = ["RegistryFeed"]


class RegistryFeed:
    """What one replica last told the registry of one check."""

    __slots__ = ("at", "status")

    def __init__(self) -> None:
        self.status: CheckStatus | None = None  # None: nothing told yet
        self.at = 0.0  # monotonic, when it was told

    def tells(self, status: CheckStatus, now: float, refresh_s: float) -> bool:
        """Whether a run that left the check at `status` goes to the registry (and, when it
        does, remember it as told)."""
        due = self.status is None or status != self.status or now - self.at >= refresh_s
        if due:
            self.status = status
            self.at = now
        return due

    def forget(self) -> None:
        """Another replica owns the check now: the next run here, if any, tells again."""
        self.status = None
