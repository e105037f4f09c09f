"""Which prober replica runs which check: the live replicas, and rendezvous hashing.

Every replica announces itself on `prober.v1.presence` every `heartbeat_s`; one not heard
for `dead_after_s` (or that said it is leaving) drops out of the live set. Each check is
owned by the live replica with the highest hash of (replica, check key): every replica
computes the same owner from the same live set, so while they agree each check is run
by exactly one of them, and when one goes only its checks move (about 1/N of them), to
the survivors. Pure: clocks are passed in.
"""

from __future__ import annotations

import hashlib

__all__ = ["Replicas", "score"]


def score(replica: str, key: str) -> int:
    digest = hashlib.blake2b(f"{replica}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Replicas:
    """The live prober replicas as this one sees them, and the checks it owns."""

    def __init__(self, me: str, dead_after_s: float) -> None:
        self.me = me
        self.dead_after_s = dead_after_s
        self.seen: dict[str, float] = {}  # replica -> when last heard (monotonic)
        self.version = 0  # bumped on every change of the live set
        self._owners: dict[str, str] = {}  # check key -> owner, valid for `version`

    @property
    def live(self) -> list[str]:
        return sorted({self.me, *self.seen})

    def heard(self, replica: str, now: float, *, leaving: bool = False) -> bool:
        """Note a presence; True when the live set changed."""
        if replica == self.me:
            return False
        if leaving:
            return self._drop(replica)
        known = replica in self.seen
        self.seen[replica] = now
        if not known:
            self._changed()
        return not known

    def expire(self, now: float) -> list[str]:
        """Drop the replicas silent for `dead_after_s`; those dropped."""
        gone = [r for r, at in self.seen.items() if now - at > self.dead_after_s]
        for replica in gone:
            self._drop(replica)
        return gone

    def owner(self, key: str) -> str:
        found = self._owners.get(key)
        if found is None:
            found = self._owners[key] = max(self.live, key=lambda r: score(r, key))
        return found

    def owns(self, key: str) -> bool:
        return self.owner(key) == self.me

    def _drop(self, replica: str) -> bool:
        if self.seen.pop(replica, None) is None:
            return False
        self._changed()
        return True

    def _changed(self) -> None:
        self.version += 1
        self._owners.clear()
