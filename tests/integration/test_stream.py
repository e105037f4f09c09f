"""services/stream on a real nats-server: the follower catches up, follows, and restarts
after the server does; the writer's compare-and-set maps every lost race to LostRace."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from waiting import until

from services import logs
from services.bus import connect
from services.config import BusSettings
from services.errors import Unavailable
from services.retry import Backoff
from services.stream import (
    Follower,
    LostRace,
    Record,
    StreamSpec,
    Writer,
    ensure_stream,
    never,
    replay,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from natsserver import NatsServer

    from services.bus import Bus

STREAM = "TEST_LOG"
SPEC = StreamSpec(name=STREAM, subjects=("test.log.>",), per_subject=100)
FAST = Backoff(base_s=0.05, cap_s=0.2)


@asynccontextmanager
async def bus_on(url: str) -> AsyncIterator[Bus]:
    settings = BusSettings(url=url, reconnect_wait_s=0.05, reconnect_max_s=0.2)
    async with connect(settings, logs.get_logger("test"), name="test") as bus:
        yield bus


def writer(bus: Bus) -> Writer:
    return Writer(bus, stream=STREAM, what="the test log", timeout_s=5.0)


async def filled(bus: Bus, subject: str, bodies: list[bytes]) -> tuple[Writer, int]:
    """The test stream made, with `bodies` appended to `subject` in order: a writer on it,
    and the last one's sequence."""
    await ensure_stream(bus, SPEC)
    w = writer(bus)
    seq = 0
    for body in bodies:
        seq = await w.append(subject, body, after=seq)
    return w, seq


class Seen:
    """What a follower delivered, awaitable."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def __call__(self, record: Record) -> None:
        self.records.append(record)

    @property
    def bodies(self) -> list[bytes]:
        return [r.data for r in self.records]


def follower(bus: Bus, seen: Seen, **kw: object) -> Follower:
    return Follower(
        bus, logs.get_logger("test"), seen, stream=STREAM, subject="test.log.>", noun="test",
        retry=FAST, look_again=FAST, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_follower_catches_up_with_the_latest_of_each_subject_then_follows(
    nats_server: NatsServer,
) -> None:
    async with bus_on(nats_server.url) as bus:
        # three records of a, one of b: a's last and b's are the latest
        w, seq = await filled(bus, "test.log.a", [b"a0", b"a1", b"a2"])
        await w.append("test.log.b", b"b0", after=0)
        seen = Seen()
        async with follower(bus, seen) as f:
            await asyncio.wait_for(f.caught_up.wait(), 5)
            assert sorted(seen.bodies) == [b"a2", b"b0"]  # all that existed, latest only
            await w.append("test.log.a", b"a3", after=seq)
            await until(lambda: b"a3" in seen.bodies, what="the new record")
        assert [r.seq for r in seen.records] == sorted(r.seq for r in seen.records)
        assert bus.reconnect_hooks == []  # leaving let go of the bus


async def test_a_follower_from_the_first_record_delivers_every_one(nats_server: NatsServer) -> None:
    async with bus_on(nats_server.url) as bus:
        await filled(bus, "test.log.a", [b"0", b"1", b"2", b"3", b"4"])
        seen = Seen()
        async with follower(bus, seen, last_per_subject=False) as f:
            await asyncio.wait_for(f.caught_up.wait(), 5)
            assert seen.bodies == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_follower_of_a_missing_stream_is_caught_up_and_finds_it_once_made(
    nats_server: NatsServer,
) -> None:
    async with bus_on(nats_server.url) as bus:
        seen = Seen()
        async with follower(bus, seen) as f:
            await asyncio.wait_for(f.caught_up.wait(), 5)  # nothing existed: nothing to wait for
            assert not f.following
            await ensure_stream(bus, SPEC)
            await writer(bus).append("test.log.a", b"first", after=0)
            await until(lambda: seen.bodies == [b"first"], what="the record of the new stream")


async def test_one_bad_record_is_counted_and_the_follower_goes_on(nats_server: NatsServer) -> None:
    def picky(record: Record) -> None:
        if record.data == b"bad":
            raise ValueError("not a record this reader takes")
        seen(record)

    async with bus_on(nats_server.url) as bus:
        await ensure_stream(bus, SPEC)
        w = writer(bus)
        seq = await w.append("test.log.a", b"bad", after=0)
        seen = Seen()
        f = Follower(
            bus, logs.get_logger("test"), picky, stream=STREAM, subject="test.log.>", noun="test"
        )
        async with f:
            await asyncio.wait_for(f.caught_up.wait(), 5)  # a bad record is delivered too
            await w.append("test.log.a", b"good", after=seq)
            await until(lambda: seen.bodies == [b"good"], what="the record after the bad one")
        assert (f.bad, f.applied) == (1, 1)


async def test_a_follower_restarts_after_the_server_does_and_delivers_each_record_once(
    tmp_path: Path,
) -> None:
    from natsserver import NatsServer  # noqa: PLC0415  # its own server: this test kills it

    server = NatsServer(tmp_path / "nats").start()
    try:
        async with bus_on(server.url) as bus:
            await ensure_stream(bus, SPEC)
            w = writer(bus)
            seq = await w.append("test.log.a", b"before", after=0)
            seen = Seen()
            async with follower(bus, seen, last_per_subject=False) as f:
                await asyncio.wait_for(f.caught_up.wait(), 5)
                server.restart()  # a crash: the ephemeral consumer is gone with it
                await until(lambda: f.restarts == 1 and f.following, 10, what="a restart")
                seq = await w.append("test.log.a", b"after", after=seq)
                await w.append("test.log.b", b"other", after=0)
                await until(lambda: len(seen.bodies) == 3, 10, what="the records since")
            assert seen.bodies == [b"before", b"after", b"other"]  # once each, in order
    finally:
        server.stop()


async def test_of_two_writers_that_built_on_the_same_record_one_stores(
    nats_server: NatsServer,
) -> None:
    async with bus_on(nats_server.url) as one, bus_on(nats_server.url) as two:
        await ensure_stream(one, SPEC)
        first = await writer(one).append("test.log.a", b"base", after=0)
        results = await asyncio.gather(
            writer(one).append("test.log.a", b"one", after=first),
            writer(two).append("test.log.a", b"two", after=first),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["LostRace", "int"]
        with pytest.raises(LostRace):  # a first write where one is stored already
            await writer(two).append("test.log.a", b"late", after=0)
        last = await writer(two).last("test.log.a")
        assert last is not None
        assert last.data in {b"one", b"two"}
        assert last.seq == next(r for r in results if isinstance(r, int))


async def test_a_scope_makes_the_race_over_several_subjects(nats_server: NatsServer) -> None:
    async with bus_on(nats_server.url) as bus:
        await ensure_stream(bus, SPEC)
        w = writer(bus)
        seq = await w.append("test.log.x.state", b"s", after=0, scope="test.log.x.*")
        with pytest.raises(LostRace):  # built on nothing; the scope has `s`
            await w.append("test.log.x.event", b"e", after=0, scope="test.log.x.*")
        await w.append("test.log.x.event", b"e", after=seq, scope="test.log.x.*")


async def test_without_jetstream_a_write_is_unavailable_and_says_why(tmp_path: Path) -> None:
    from natsserver import NatsServer  # noqa: PLC0415  # a server without JetStream

    server = NatsServer(tmp_path / "plain", jetstream=False).start()
    try:
        async with bus_on(server.url) as bus:
            w = Writer(bus, stream=STREAM, what="the test log", timeout_s=0.5)
            with pytest.raises(Unavailable, match=r"the test log \(JetStream stream TEST_LOG\)"):
                await w.append("test.log.a", b"x", after=0)
    finally:
        server.stop()


async def test_a_replay_reads_what_was_stored_when_it_began(nats_server: NatsServer) -> None:
    async with bus_on(nats_server.url) as bus:
        w, _ = await filled(bus, "test.log.a", [b"0", b"1", b"2", b"3"])
        got: list[bytes] = []
        await replay(w, "test.log.a", lambda r: got.append(r.data), idle_s=5)
        assert got == [b"0", b"1", b"2", b"3"]
        got.clear()
        await replay(w, "test.log.none", lambda r: got.append(r.data), idle_s=5)
        assert got == []
        now = datetime.now(UTC)
        await replay(w, "test.log.a", lambda r: got.append(r.data), since=now, idle_s=5)
        assert got == []


async def test_ensure_stream_updates_only_where_the_owner_says(nats_server: NatsServer) -> None:
    async with bus_on(nats_server.url) as bus:
        await ensure_stream(bus, SPEC)
        kept = StreamSpec(name=STREAM, subjects=SPEC.subjects, per_subject=5)
        await ensure_stream(bus, kept, outdated=never)  # a reader: left as it is
        await writer(bus).append("test.log.a", b"x", after=0)
        js = bus.jetstream(timeout_s=2)
        assert (await js.stream_info(STREAM)).config.max_msgs_per_subject == 100
        await ensure_stream(bus, kept)  # the owner: brought to its spec
        assert (await js.stream_info(STREAM)).config.max_msgs_per_subject == 5
