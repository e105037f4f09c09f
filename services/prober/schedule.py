"""When each check runs: fixed slots per check, spread over its interval, the same in every
replica.

A check's runs fall at `phase + k * interval_s` on the wall clock, its phase a hash of the
check's key: thousands of checks with one interval spread evenly instead of firing
together, and every replica agrees on the slots (wall clock: the replicas are different
processes, their monotonic clocks share no origin). So when a check changes hands its new
owner runs it at the slot the old owner would have: not twice in one interval, not
skipped for more than one. Pure: the clock is passed in.
"""

from __future__ import annotations

import heapq
import math

from services.prober.ownership import score

__all__ = ["Slots", "next_slot"]

_SPAN = float(1 << 64)


def next_slot(key: str, interval_s: float, after: float) -> float:
    """The first slot of check `key` strictly after `after`."""
    phase = score("", key) / _SPAN * interval_s
    k = math.floor((after - phase) / interval_s) + 1
    slot = phase + k * interval_s
    if slot <= after:  # float rounding at an exact slot
        slot += interval_s
    return slot


class Slots:
    """A heap of (slot, generation, key): the next run of every check, stale ones skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self.generation: dict[str, int] = {}
        self._gen = 0

    def __len__(self) -> int:
        return len(self.generation)

    def add(self, key: str, interval_s: float, now: float) -> None:
        """(Re)schedule `key`: its next slot after `now` (an older entry goes stale)."""
        self._gen += 1
        self.generation[key] = self._gen
        heapq.heappush(self._heap, (next_slot(key, interval_s, now), self._gen, key))

    def drop(self, key: str) -> None:
        self.generation.pop(key, None)

    def next_due(self) -> float | None:
        while self._heap and self.generation.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)  # stale: dropped or rescheduled since
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[tuple[str, float]]:
        """Pop every check due by `now`: (key, its slot). The caller reschedules them."""
        out: list[tuple[str, float]] = []
        while (slot := self.next_due()) is not None and slot <= now:
            key = heapq.heappop(self._heap)[2]
            del self.generation[key]
            out.append((key, slot))
        return out
