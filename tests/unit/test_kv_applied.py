"""How far a kv replica has followed the store, and a listing's pages: pure logic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from schemas.kv import KvRecord
from services.kv.applied import Applied
from services.kv.index import KeyIndex, fold_keys, folded
from services.kv.worker import names_page

AT = datetime(2026, 1, 1, tzinfo=UTC)


async def test_a_read_waits_until_its_sequence_is_followed() -> None:
    applied = Applied()
    applied.advance(3)
    assert await applied.reach(3, timeout_s=60)  # already followed: at once
    waiting = asyncio.ensure_future(applied.reach(5, timeout_s=60))
    await asyncio.sleep(0)  # let it park
    applied.advance(4)
    assert not waiting.done()
    assert len(applied) == 1
    applied.advance(6)  # past it: every record up to 6 was delivered
    assert await waiting
    assert len(applied) == 0


async def test_a_read_that_is_never_followed_gives_up() -> None:
    applied = Applied()
    assert not await applied.reach(1, timeout_s=0.01)
    assert len(applied) == 0  # nothing left parked


def test_an_older_sequence_does_not_move_it_back() -> None:
    applied = Applied()
    applied.advance(9)
    applied.advance(2)
    assert applied.seq == 9


def test_a_scan_continues_after_a_key_within_its_prefix() -> None:
    index = KeyIndex()
    for seq, key in enumerate(["a/1", "a/2", "a/3", "b/1"], start=1):
        index.apply(KvRecord(key=key, op="put", actor="t", at=AT), seq)
    assert [e.key for e in index.scan("a/", after="a/1")] == ["a/2", "a/3"]
    assert [e.key for e in index.scan("a/", after="a/3")] == []
    assert [e.key for e in index.scan("a/", after="")] == ["a/1", "a/2", "a/3"]


def test_a_folder_view_is_paged_without_repeating_a_folder() -> None:
    index = KeyIndex()
    keys = ["c/a", "c/b/1", "c/b/2", "c/b/3", "c/d/1", "c/e"]
    for seq, key in enumerate(keys, start=1):
        index.apply(KvRecord(key=key, op="put", actor="t", at=AT), seq)
    pages: list[list[str]] = []
    after = ""
    while True:  # a budget of about two names a page
        scan = (e.key for e in index.scan("c/", after))
        names, after = names_page(folded(scan, "c/", "/"), "/", budget=14)
        pages.append(names)
        if not after:
            break
    assert pages == [["c/a", "c/b/"], ["c/d/", "c/e"]]
    assert [n for page in pages for n in page] == fold_keys(iter(keys), "c/", "/")
