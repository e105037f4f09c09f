"""The config-center history as the console shows it: newest first, each with its diff."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.kv import KvEntry, KvHistory
from services.gateway.console.kv import revisions

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _entry(index: int, value: bytes, op: str = "put", **fields: object) -> KvEntry:
    return KvEntry(key="app/a", value=value, modify_index=index, op=op, at=AT, **fields)  # type: ignore[arg-type]


def test_each_revision_is_diffed_against_the_one_before() -> None:
    history = KvHistory(
        key="app/a",
        revisions=[
            _entry(3, b"a\nb\nc\n", actor="alice"),
            _entry(5, b"a\nB\nc\n", actor="bob", reason="typo"),
            _entry(6, b"", op="delete"),
            _entry(9, b"\xff\xfe", restored=3),
        ],
    )
    rows = revisions(history)
    assert [r["index"] for r in rows] == [9, 6, 5, 3]  # newest first
    assert rows[3]["diff"] == ["@@ -0,0 +1,3 @@", "+a", "+b", "+c"]  # the first against none
    assert rows[2]["diff"] == ["@@ -1,3 +1,3 @@", " a", "-b", "+B", " c"]
    assert (rows[2]["actor"], rows[2]["reason"]) == ("bob", "typo")
    assert rows[1]["op"] == "delete"
    assert rows[1]["diff"] == ["@@ -1,3 +0,0 @@", "-a", "-B", "-c"]
    # bytes that are not UTF-8: no text, the size, and no line diff
    assert (rows[0]["value"], rows[0]["size"], rows[0]["restored"]) == (None, 2, 3)
    assert rows[0]["diff"] == ["(not text: compare the sizes)"]
