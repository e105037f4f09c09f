"""JetStream facts every worker that writes with compare-and-set needs.

A write carrying `Nats-Expected-Last-Subject-Sequence` (or a KV `update(last=)` or
`create()`) that finds another write there first is refused with 10071, which names the
sequence; a clustered stream's leader may answer 10164 ("wrong last sequence", no number)
instead. Both mean: another writer won the race, read again and retry.
"""

from __future__ import annotations

__all__ = ["WRONG_LAST_SEQUENCE"]

WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
