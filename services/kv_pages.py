"""Reading a prefix of the config center's keys a page at a time, as every reader does.

The kv worker answers a recursive read (`KvQuery(recurse=True)`, or `keys`) with the
entries (or names) that fit one NATS reply and `next_after`, where the next page starts
(empty on the last page). A reader asks until it is empty and joins the pages, up to
MAX_LISTING bytes of values (or names): past that a TooLarge names the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from schemas import subjects
from schemas.kv import MAX_LISTING, KvEntries, KvEntry, KvQuery
from services.errors import TooLarge

if TYPE_CHECKING:
    from services.bus import Bus

__all__ = ["read_prefix"]


async def read_prefix(
    bus: Bus, prefix: str, query: KvQuery, *, timeout: float, limit: int = MAX_LISTING
) -> KvEntries:
    """Every live entry under `prefix` (with `keys`, every name), in key order; `index`
    and `store_index` are the first page's (a change while paging is past them, so a
    blocking reader sees it)."""
    subject = subjects.kv_subject(subjects.KV_GET, prefix)
    first = found = await bus.request(subject, query, KvEntries, timeout=timeout)
    entries: list[KvEntry] = []
    keys: list[str] = []
    size = 0
    while True:
        entries += found.entries
        keys += found.keys
        size += sum(len(entry.value) for entry in found.entries)
        size += sum(len(name) for name in found.keys)
        if size > limit:
            raise TooLarge(
                f"the values under {prefix!r} are more than {limit} bytes "
                f"({limit // 2**20} MiB), the most one recursive read returns: read a "
                "narrower prefix, or list the keys (?keys) and read them one by one"
            )
        if not found.next_after:
            break
        asked = msgspec.structs.replace(query, after=found.next_after)
        found = await bus.request(subject, asked, KvEntries, timeout=timeout)
    index, store_index = first.index, first.store_index
    return KvEntries(index=index, store_index=store_index, entries=entries, keys=keys)
