"""The config center's pure parts: keys as subject tokens, the rules for a key, and the
in-memory index reads are served from."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas import subjects
from schemas.kv import KvRecord
from services.errors import BadRequest
from services.kv.index import KeyIndex, fold_keys
from services.kv.keys import check_key, check_prefix

AT = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "tokens"),
    [
        ("config/app.yml", "config.app%2Eyml"),
        ("traefik/", "traefik.%"),
        ("a//b", "a.%.b"),
        ("", "%"),
        ("é/x y", "%C3%A9.x%20y"),
        ("a.b*c>$%", "a%2Eb%2Ac%3E%24%25"),
    ],
)
def test_a_key_is_one_token_a_segment_and_back(key: str, tokens: str) -> None:
    assert subjects.kv_tokens(key) == tokens
    assert subjects.kv_key(tokens) == key


@pytest.mark.parametrize("tokens", ["a%2", "A%41", "%%", "a%2e", "a%FF", "x%"])
def test_tokens_no_key_encodes_to_are_refused(tokens: str) -> None:
    with pytest.raises(subjects.InvalidNameError):
        subjects.kv_key(tokens)


def test_a_watch_subscribes_under_the_whole_segments() -> None:
    assert subjects.kv_watch("a/b/") == "kv.v1.changes.a.b.>"
    assert subjects.kv_watch("a/tr") == "kv.v1.changes.a.>"
    assert subjects.kv_watch("abc") == subjects.kv_watch("") == "kv.v1.changes.>"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "is empty"),
        ("/lead", "starts with /"),
        ("a\x00b", "control character"),
        ("a\x7f", "control character"),
        ("k" * 513, "is 513 bytes long"),
    ],
)
def test_bad_keys_say_why(key: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        check_key(key)


def test_a_prefix_may_be_empty() -> None:
    assert check_prefix("") == ""
    assert check_key("a/b c/ü") == "a/b c/ü"


def _record(key: str, op: str = "put", create: int = 0) -> KvRecord:
    return KvRecord(key=key, op=op, value=key.encode(), create_index=create, actor="t", at=AT)  # type: ignore[arg-type]


def test_the_index_keeps_the_latest_and_tombstones() -> None:
    index = KeyIndex()
    index.apply(_record("a/1"), 1)
    index.apply(_record("a/2"), 2)
    index.apply(_record("b"), 3)
    index.apply(_record("a/1", create=1), 4)
    assert index.apply(_record("a/1"), 2) is None  # replayed: older than held
    got = index.get("a/1")
    assert got is not None
    assert (got.create_index, got.modify_index) == (1, 4)
    index.apply(_record("a/2", op="delete"), 5)
    assert index.get("a/2") is None
    assert index.last_seq("a/2") == 5  # what a cas=0 create expects
    assert [e.key for e in index.scan("a/")] == ["a/1"]
    assert index.index_of("a/", recurse=True) == 5  # the delete moved the prefix
    assert index.index_of("b", recurse=False) == 3
    assert index.index_of("never", recurse=False) == index.index == 5
    assert len(index) == 2


def test_keys_fold_at_the_separator() -> None:
    keys = ["c/a", "c/b/x", "c/b/y", "c/d/"]
    assert fold_keys(iter(keys), "c/", "/") == ["c/a", "c/b/", "c/d/"]
    assert fold_keys(iter(keys), "c/", "") == keys
