"""The config center over NATS: versioned, audited, compare-and-set, pushed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from workers import run_kv

from schemas import subjects
from schemas.fields import utcnow
from schemas.kv import (
    MAX_VALUE,
    KvDelete,
    KvEntries,
    KvEntry,
    KvHistory,
    KvHistoryQuery,
    KvPut,
    KvQuery,
    KvRecord,
    KvRollback,
    KvWritten,
)
from services.errors import BadRequest, TooLarge, Unavailable
from services.kv import KvSettings
from services.kv_pages import read_prefix
from services.sdk import KvClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.client import Client
    from natsserver import NatsServer

    from services.bus import Bus


@pytest.fixture
async def kv(nats_server: NatsServer) -> AsyncIterator[Any]:
    async with run_kv(nats_server.url) as worker:
        yield worker


async def put(bus: Bus, key: str, value: bytes, **kw: Any) -> KvWritten:
    kw.setdefault("actor", "ann")
    subject = subjects.kv_subject(subjects.KV_PUT, key)
    return await bus.request(subject, KvPut(value=value, **kw), KvWritten)


async def get(bus: Bus, key: str, **kw: Any) -> KvEntries:
    subject = subjects.kv_subject(subjects.KV_GET, key)
    return await bus.request(subject, KvQuery(**kw), KvEntries)


async def delete(bus: Bus, key: str, **kw: Any) -> KvWritten:
    kw.setdefault("actor", "ann")
    subject = subjects.kv_subject(subjects.KV_DELETE, key)
    return await bus.request(subject, KvDelete(**kw), KvWritten)


async def history(bus: Bus, key: str) -> KvHistory:
    subject = subjects.kv_subject(subjects.KV_HISTORY, key)
    return await bus.request(subject, KvHistoryQuery(), KvHistory)


async def test_a_put_is_read_back_with_its_indexes_flags_and_audit(kv: Any, bus: Bus) -> None:
    first = await put(bus, "web/db.url", b"postgres://a", flags=42, reason="first")
    second = await put(bus, "web/db.url", b"postgres://b", actor="bob")
    assert first.ok
    assert second.ok
    assert first.entry is not None
    assert second.entry is not None
    assert second.entry.modify_index > first.entry.modify_index
    got = await get(bus, "web/db.url")
    (entry,) = got.entries
    assert entry.value == b"postgres://b"
    assert entry.flags == 0
    assert entry.create_index == first.entry.modify_index
    assert entry.modify_index == second.entry.modify_index == got.index
    assert (entry.actor, entry.lock_index, entry.session) == ("bob", 0, "")


async def test_an_absent_key_has_no_entry_but_an_index(kv: Any, bus: Bus) -> None:
    written = await put(bus, "other", b"x")
    got = await get(bus, "nothing/here")
    assert got.entries == []
    assert got.index == written.index


async def test_compare_and_set_on_the_modify_index(kv: Any, bus: Bus) -> None:
    created = await put(bus, "app/flag", b"on", cas=0)
    assert created.ok
    assert created.entry is not None
    assert not (await put(bus, "app/flag", b"again", cas=0)).ok  # exists already
    assert not (await put(bus, "app/flag", b"stale", cas=created.entry.modify_index - 1)).ok
    assert (await put(bus, "app/flag", b"off", cas=created.entry.modify_index)).ok
    (entry,) = (await get(bus, "app/flag")).entries
    assert entry.value == b"off"
    assert not (await delete(bus, "app/flag", cas=created.entry.modify_index)).ok
    assert (await delete(bus, "app/flag", cas=entry.modify_index)).ok
    assert (await put(bus, "app/flag", b"back", cas=0)).ok  # absent again: cas=0 takes it


async def test_concurrent_cas_writes_one_wins(kv: Any, bus: Bus) -> None:
    results = await asyncio.gather(*(put(bus, "race", str(i).encode(), cas=0) for i in range(8)))
    assert sum(r.ok for r in results) == 1


async def test_recurse_keys_and_separator(kv: Any, bus: Bus) -> None:
    for key in ("cfg/a", "cfg/b/x", "cfg/b/y", "cfgx", "other/z"):
        await put(bus, key, key.encode())
    listed = await get(bus, "cfg/", recurse=True)
    assert [e.key for e in listed.entries] == ["cfg/a", "cfg/b/x", "cfg/b/y"]
    assert (await get(bus, "cfg", keys=True)).keys == ["cfg/a", "cfg/b/x", "cfg/b/y", "cfgx"]
    folded = await get(bus, "cfg/", keys=True, separator="/")
    assert folded.keys == ["cfg/a", "cfg/b/"]
    assert len((await get(bus, "", recurse=True)).entries) == 5


async def test_delete_of_a_prefix_and_its_index_moves(kv: Any, bus: Bus) -> None:
    for key in ("gone/a", "gone/b", "kept"):
        await put(bus, key, b"v")
    before = (await get(bus, "gone/", recurse=True)).index
    deleted = await delete(bus, "gone/", recurse=True)
    assert (deleted.ok, deleted.deleted) == (True, 2)
    after = await get(bus, "gone/", recurse=True)
    assert after.entries == []
    assert after.index > before
    assert len((await get(bus, "kept")).entries) == 1


async def test_history_and_rollback_are_audited(kv: Any, bus: Bus) -> None:
    v1 = await put(bus, "svc/timeout", b"1s", actor="ann", reason="start")
    await put(bus, "svc/timeout", b"5s", actor="bob", reason="slow db")
    await delete(bus, "svc/timeout", actor="bob", reason="oops")
    assert v1.entry is not None
    subject = subjects.kv_subject(subjects.KV_ROLLBACK, "svc/timeout")
    rollback = KvRollback(to_index=v1.entry.modify_index, actor="cat", reason="back to 1s")
    restored = await bus.request(subject, rollback, KvWritten)
    assert restored.entry is not None
    assert (restored.entry.value, restored.entry.op) == (b"1s", "rollback")
    assert restored.entry.restored == v1.entry.modify_index
    revisions = (await history(bus, "svc/timeout")).revisions
    assert [(r.op, r.actor, r.reason) for r in revisions] == [
        ("put", "ann", "start"),
        ("put", "bob", "slow db"),
        ("delete", "bob", "oops"),
        ("rollback", "cat", "back to 1s"),
    ]
    assert all(r.at is not None for r in revisions)
    bad = KvRollback(to_index=10_000, actor="cat")
    with pytest.raises(BadRequest, match="no revision at index 10000"):
        await bus.request(subject, bad, KvWritten)


async def test_history_depth_is_bounded(nats_server: NatsServer, bus: Bus) -> None:
    async with run_kv(nats_server.url, msgspec.structs.replace(_settings(), history=3)):
        for i in range(5):
            await put(bus, "deep", str(i).encode())
        revisions = (await history(bus, "deep")).revisions
    assert [r.value for r in revisions] == [b"2", b"3", b"4"]


def _settings() -> Any:
    from services.kv import KvSettings  # noqa: PLC0415

    return KvSettings(retry_s=0.1)


async def test_values_up_to_512_kib_and_not_more(kv: Any, bus: Bus) -> None:
    big = bytes(range(256)) * (MAX_VALUE // 256)
    assert (await put(bus, "blob", big)).ok
    assert (await get(bus, "blob")).entries[0].value == big
    with pytest.raises(TooLarge, match="the limit is 524288"):
        await put(bus, "blob", big + b"x")


@pytest.mark.parametrize("key", ["/lead", "ctl\x01char"])
async def test_a_bad_key_is_refused_with_the_rule(kv: Any, bus: Bus, key: str) -> None:
    with pytest.raises(BadRequest, match="a key is 1 to 512 bytes"):
        await put(bus, key, b"v")


async def test_the_store_outlives_the_worker(nats_server: NatsServer, bus: Bus) -> None:
    async with run_kv(nats_server.url):
        written = await put(bus, "durable/k", b"kept")
        await delete(bus, "durable/gone-never-was")
    async with run_kv(nats_server.url):
        (entry,) = (await get(bus, "durable/k")).entries
    assert written.entry is not None
    assert (entry.value, entry.modify_index) == (b"kept", written.entry.modify_index)


async def test_a_change_is_pushed_to_a_prefix_watcher(kv: Any, bus: Bus) -> None:
    seen: asyncio.Queue[Any] = asyncio.Queue()
    sub = await bus.nc.subscribe(subjects.kv_watch("watched/"), cb=seen.put)
    await put(bus, "elsewhere", b"no")
    written = await put(bus, "watched/x.y", b"yes", actor="ann")
    msg = await asyncio.wait_for(seen.get(), 5)
    record = msgspec.json.decode(msg.data, type=KvRecord)
    assert (record.key, record.value, record.actor) == ("watched/x.y", b"yes", "ann")
    assert written.entry is not None
    assert int(msg.headers["Nats-Sequence"]) == written.entry.modify_index
    assert subjects.kv_key_from(msg.subject, subjects.KV_CHANGES) == "watched/x.y"
    await sub.unsubscribe()


# -- the SDK ----------------------------------------------------------------------------------
async def test_the_sdk_reads_writes_and_rolls_back(kv: Any, nc: Client) -> None:
    client = KvClient(nc, actor="deployer")
    written = await client.put("web/timeout", "1s", reason="start")
    assert written.ok
    assert written.entry is not None
    assert not (await client.put("web/timeout", b"2s", cas=0)).ok
    await client.put("web/timeout", b"2s")
    entry = await client.get("web/timeout")
    assert entry is not None
    assert (entry.value, entry.actor) == (b"2s", "deployer")
    assert await client.get("web/absent") is None
    back = await client.rollback("web/timeout", written.entry.modify_index, reason="undo")
    assert back.entry is not None
    assert back.entry.value == b"1s"
    assert [r.reason for r in await client.history("web/timeout")] == ["start", "", "undo"]
    assert await client.keys("web/") == ["web/timeout"]
    assert (await client.delete("web/", recurse=True)).deleted == 1
    with pytest.raises(BadRequest, match="starts with /"):
        await client.get("/x")


async def test_an_sdk_watch_is_pushed_each_change_under_its_prefix(kv: Any, nc: Client) -> None:
    client = KvClient(nc)
    await client.put("app/a", b"0")
    async with client.watch("app/", current=True) as changes:
        seen = aiter(changes)
        first = await asyncio.wait_for(anext(seen), 5)
        assert (first.key, first.value) == ("app/a", b"0")
        await client.put("apple", b"not under app/")
        await client.put("app/b", b"1")
        await client.delete("app/a")
        got = [await asyncio.wait_for(anext(seen), 5) for _ in range(2)]
    assert [(e.key, e.op, e.value) for e in got] == [
        ("app/b", "put", b"1"),
        ("app/a", "delete", b""),
    ]
    assert got[0].modify_index > first.modify_index


async def test_an_sdk_watch_with_a_callback(kv: Any, nc: Client) -> None:
    client = KvClient(nc)
    seen: asyncio.Queue[KvEntry] = asyncio.Queue()
    async with client.watch("cb/", seen.put):
        await client.put("cb/x", b"1")
        await client.put("cb/y", b"2")
        got = [await asyncio.wait_for(seen.get(), 5) for _ in range(2)]
    assert [(e.key, e.value) for e in got] == [("cb/x", b"1"), ("cb/y", b"2")]


# -- the command line -------------------------------------------------------------------------
async def test_baton_kv_commands(kv: Any, nats_server: NatsServer) -> None:
    from test_cli import ACTOR, baton, started  # noqa: PLC0415  # the CLI runner lives there

    url = nats_server.url
    async with started(url, "kv", "watch", "cfg/", "--count", "2") as watcher:
        assert watcher.stderr is not None
        await asyncio.wait_for(watcher.stderr.readline(), 15)  # "watching ...": subscribed
        put = await baton(url, "kv", "put", "cfg/db.url", "postgres://a", "--reason", "first")
        assert put.code == 0, put.err
        first = int(put.out.split()[-1])
        assert (await baton(url, "kv", "put", "cfg/db.url", "postgres://b")).code == 0
        out, _ = await asyncio.wait_for(watcher.communicate(), 15)
    assert [line.split("\t")[0] for line in out.decode().splitlines()] == ["cfg/db.url"] * 2
    got = await baton(url, "kv", "get", "cfg/db.url")
    assert (got.code, got.out) == (0, "postgres://b")
    refused = await baton(url, "kv", "put", "cfg/db.url", "x", "--cas", "0")
    assert (refused.code, "was not stored" in refused.err) == (1, True)
    listed = await baton(url, "kv", "ls", "cfg/")
    assert [row[0] for row in listed.rows] == ["cfg/db.url"]
    back = await baton(url, "kv", "rollback", "cfg/db.url", str(first), "--reason", "undo")
    assert back.code == 0, back.err
    assert (await baton(url, "kv", "get", "cfg/db.url")).out == "postgres://a"
    history = await baton(url, "kv", "history", "cfg/db.url")
    ops = [line.split("\t")[1:4:2] for line in history.out.splitlines()]
    assert [op for op, _ in ops] == ["put", "put", f"rollback (from {first})"]
    assert {who for _, who in ops} == {ACTOR}
    deleted = await baton(url, "kv", "del", "cfg/", "--recurse")
    assert deleted.out.startswith("deleted 1 key(s)")
    missing = await baton(url, "kv", "get", "cfg/db.url")
    assert (missing.code, "no key" in missing.err) == (1, True)


async def test_cas_and_deletes_hold_across_two_replicas(
    kv: Any, nats_server: NatsServer, bus: Bus
) -> None:
    """A replica whose memory lags the stream asks the stream before it answers that a
    cas does not match, or that there is nothing to delete."""
    async with run_kv(nats_server.url):  # a second replica, beside the fixture's
        written = await put(bus, "chain", b"0", cas=0)
        for n in range(1, 21):
            assert written.entry is not None
            written = await put(bus, "chain", str(n).encode(), cas=written.entry.modify_index)
            assert written.ok, n
            await put(bus, f"gone/{n}", b"v")
            deleted = await delete(bus, f"gone/{n}")
            assert (deleted.ok, deleted.deleted) == (True, 1), n


BIG = 400 * 1024  # five of these are past one reply (900 KiB): a read of them is paged


async def _put_big(bus: Bus, prefix: str, count: int = 5) -> dict[str, bytes]:
    values = {f"{prefix}{n}": bytes([n + 1]) * BIG for n in range(count)}
    for key, value in values.items():
        assert (await put(bus, key, value)).ok
    return values


async def test_a_prefix_past_one_reply_is_read_in_pages(kv: Any, bus: Bus, nc: Client) -> None:
    values = await _put_big(bus, "big/")
    first = await get(bus, "big/", recurse=True)
    assert 0 < len(first.entries) < len(values)  # a page, and where the next one starts
    assert first.next_after == first.entries[-1].key
    rest = await get(bus, "big/", recurse=True, after=first.next_after)
    assert [e.key for e in first.entries + rest.entries] == ["big/0", "big/1"]  # one a page
    listed = await KvClient(nc).entries("big/")
    assert {e.key: e.value for e in listed.entries} == values
    assert listed.index == first.index
    with pytest.raises(TooLarge, match=r"more than 1048576 bytes \(1 MiB\)"):
        await read_prefix(bus, "big/", KvQuery(recurse=True), timeout=5, limit=2**20)


async def test_baton_kv_ls_lists_every_page(kv: Any, bus: Bus, nats_server: NatsServer) -> None:
    from test_cli import baton  # noqa: PLC0415  # the CLI runner lives there

    values = await _put_big(bus, "ls/")
    listed = await baton(nats_server.url, "kv", "ls", "ls/")
    assert listed.code == 0, listed.err
    assert [row[0] for row in listed.rows] == sorted(values)


async def test_a_consistent_read_waits_for_what_the_store_holds(
    nats_server: NatsServer, bus: Bus
) -> None:
    """A replica that has not followed the newest record answers a consistent read with
    a 503 (Unavailable) naming how far it got, rather than with what it holds."""
    settings = KvSettings(retry_s=0.1, consistent_wait_s=0.2)
    async with run_kv(nats_server.url, settings) as worker:
        await put(bus, "lag/k", b"old")
        assert (await get(bus, "lag/k", consistent=True)).entries[0].value == b"old"
        await worker.store.follower.close()  # this replica stops following the stream
        newer = KvRecord(key="lag/k", op="put", value=b"new", actor="other", at=utcnow())
        await worker.store.append(newer, worker.index.last_seq("lag/k"))  # another replica
        assert (await get(bus, "lag/k")).entries[0].value == b"old"  # what it holds: stale
        with pytest.raises(Unavailable, match="followed the store to index"):
            await get(bus, "lag/k", consistent=True)


async def test_consistent_reads_see_each_write_across_two_replicas(
    kv: Any, nats_server: NatsServer, bus: Bus
) -> None:
    async with run_kv(nats_server.url):  # a second replica, beside the fixture's
        for n in range(20):
            await put(bus, "both/k", str(n).encode())
            found = await get(bus, "both/k", consistent=True)
            assert found.entries[0].value == str(n).encode(), n
