"""A weighted consistent-hash ring (ketama points, as Dubbo and Envoy's ring hash).

Each instance gets about 160 points per mean weight, four per md5 digest, so a key maps
to the first point clockwise and adding or removing one of N instances moves about 1/N
of keys. Points are hashed from the instance id alone, so every balancer replica builds
the same ring. A service with so many instances that 160 points each would pass
`MAX_POINTS` gets fewer points per instance.
"""

from __future__ import annotations

import bisect
import hashlib
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["BASE_POINTS", "MAX_POINTS", "HashRing", "key_hash"]

BASE_POINTS = 160
MAX_POINTS = 1 << 18


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:4], "little")  # noqa: S324  # placement, not security


def _points(instance_id: str, count: int) -> list[int]:
    out: list[int] = []
    for i in range((count + 3) // 4):
        digest = hashlib.md5(f"{instance_id}-{i}".encode()).digest()  # noqa: S324
        out.extend(int.from_bytes(digest[j : j + 4], "little") for j in range(0, 16, 4))
    return out[:count]


class HashRing:
    def __init__(self) -> None:
        self.hashes = array("I")
        self.owners: list[str] = []
        self.stale = True
        self.built_at = float("-inf")

    def build(self, weights: Iterable[tuple[str, int]], now: float) -> None:
        live = [(iid, w) for iid, w in weights if w > 0]
        self.stale = False
        self.built_at = now
        if not live:
            self.hashes, self.owners = array("I"), []
            return
        mean = sum(w for _, w in live) / len(live)
        base = max(1, min(BASE_POINTS, MAX_POINTS // len(live)))
        ids = [iid for iid, _ in live]
        packed: list[int] = []
        for index, (iid, w) in enumerate(live):
            count = max(1, min(8 * base, round(base * w / mean)))
            packed.extend((h << 32) | index for h in _points(iid, count))
        packed.sort()  # one sort of plain ints: fast even for a quarter million points
        self.hashes = array("I", (p >> 32 for p in packed))
        self.owners = [ids[p & 0xFFFFFFFF] for p in packed]

    def lookup(self, key: str, accept: Callable[[str], bool]) -> str | None:
        """The owner of the first point clockwise from `key` that `accept` takes."""
        n = len(self.owners)
        if n == 0:
            return None
        start = bisect.bisect_left(self.hashes, key_hash(key))
        tried: set[str] = set()
        for step in range(n):
            owner = self.owners[(start + step) % n]
            if owner in tried:
                continue
            if accept(owner):
                return owner
            tried.add(owner)
        return None
