"""The latest revision of every key, in memory, in key order: what reads are served from.

Built from the stream (services/kv/log.py) and kept current by following it: each stored
record is applied with its sequence. A delete stays as a tombstone, so that a prefix's
index still moves when a key under it goes, and a compare-and-set on an absent key knows
the sequence to expect. Pure: no I/O, tested directly.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from schemas.kv import KvEntry, KvRecord, entry_of

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["KeyIndex", "fold_keys", "folded", "past_name"]


def fold_keys(keys: Iterator[str], prefix: str, separator: str) -> list[str]:
    """Consul's ?keys&separator: each key cut after the first separator past the prefix,
    listed once (the folders of a folder view); no separator lists the keys as they are."""
    return list(folded(keys, prefix, separator))


def folded(keys: Iterator[str], prefix: str, separator: str) -> Iterator[str]:
    """fold_keys, one name at a time (a page stops when it is full)."""
    if not separator:
        yield from keys
        return
    last = None
    start = len(prefix)
    for key in keys:
        cut = key.find(separator, start)
        name = key if cut < 0 else key[: cut + len(separator)]
        if name != last:  # keys come sorted: a folder's keys are adjacent
            yield name
            last = name


def past_name(name: str, separator: str) -> str:
    """Where the page after a listed `name` starts: past every key a folder name stands
    for (they sort before the folder followed by the highest code point)."""
    return name + "\U0010ffff" if separator and name.endswith(separator) else name


class KeyIndex:
    def __init__(self) -> None:
        self.index = 0  # the newest sequence applied: the store's X-Consul-Index
        self._latest: dict[str, KvEntry] = {}  # tombstones included (op "delete")
        self._sorted: list[str] = []
        self.live = 0

    def apply(self, record: KvRecord, seq: int) -> KvEntry | None:
        """Take the record stored at `seq`; an older one than held (replayed) is ignored.
        Returns the entry it became, or None if ignored."""
        held = self._latest.get(record.key)
        if held is not None and held.modify_index >= seq:
            return None
        entry = entry_of(record, seq)
        if held is None:
            bisect.insort(self._sorted, record.key)
        self.live += (entry.op != "delete") - (held is not None and held.op != "delete")
        self._latest[record.key] = entry
        self.index = max(self.index, seq)
        return entry

    def get(self, key: str) -> KvEntry | None:
        """The key's value now; None if absent or deleted."""
        entry = self._latest.get(key)
        return entry if entry is not None and entry.op != "delete" else None

    def last_seq(self, key: str) -> int:
        """The sequence of the key's last record, tombstone or not (0: never written):
        what its next write's compare-and-set expects."""
        entry = self._latest.get(key)
        return entry.modify_index if entry is not None else 0

    def _under(self, prefix: str, after: str = "") -> Iterator[KvEntry]:
        at = bisect.bisect_left(self._sorted, prefix)
        if after:
            at = max(at, bisect.bisect_right(self._sorted, after))
        for key in self._sorted[at:]:
            if not key.startswith(prefix):
                return
            yield self._latest[key]

    def scan(self, prefix: str, after: str = "") -> Iterator[KvEntry]:
        """Every live entry whose key starts with `prefix`, in key order; with `after`,
        only those past that key (where the previous page of a listing ended)."""
        return (entry for entry in self._under(prefix, after) if entry.op != "delete")

    def index_of(self, prefix: str, *, recurse: bool) -> int:
        """What a blocking read of the key (or prefix) waits past: its newest change,
        deletes included; the store's index when nothing was ever there."""
        if not recurse:
            entry = self._latest.get(prefix)
            return entry.modify_index if entry is not None else self.index
        newest = max((entry.modify_index for entry in self._under(prefix)), default=0)
        return newest or self.index

    def __len__(self) -> int:
        return self.live
