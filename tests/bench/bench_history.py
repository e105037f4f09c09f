"""Config history: reading 10,000 revisions of one service from the config log.

The log holds `--revisions` entries of one service (interleaved with as many of another,
as a busy log is). The governor's store reads them with one ordered consumer
(`ConfigStore.history`); the baseline, measured in the same run on the same server, is
how it read them before: one `STREAM.MSG.GET` request per revision. A last row times
`governor.v1.history` end to end with a worker process (newest 1,000 revisions).

    python tests/bench/bench_history.py [--quick] [--revisions 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import TYPE_CHECKING

import msgspec
import nats
import nats.js.errors
from harness import Row, emit, processes, wait_for_responder, worker

from schemas import subjects
from schemas.fields import utcnow
from schemas.governor import ConfigApplied, ConfigHistory, HistoryQuery, ServiceConfig
from schemas.registry import Empty
from services import logs
from services.bus import Bus
from services.configlog import decode_entry, ensure_stream
from services.governor.store import ConfigStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.js import JetStreamContext

ROUNDS = 3


async def one_request_per_revision(js: JetStreamContext, service: str) -> list[ConfigApplied]:
    """The store's history before: `get_msg(next=True)` from each sequence on."""
    entries: list[ConfigApplied] = []
    subject = subjects.config_log(service)
    seq = 1
    while True:
        try:
            raw = await js.get_msg(subjects.CONFIG_STREAM, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return entries
        assert raw.data is not None
        entries.append(decode_entry(raw.data))
        seq = (raw.seq or seq) + 1


async def fill(js: JetStreamContext, revisions: int) -> None:
    """`revisions` entries each of `api` and `other`, published without waiting for each
    ack (the benchmark is the reading, not the writing)."""
    encode = msgspec.json.Encoder().encode
    pending = []
    for revision in range(1, revisions + 1):
        for service in ("api", "other"):
            entry = ConfigApplied(
                service=service,
                revision=revision,
                config=ServiceConfig(service=service, revision=revision, protect_threshold=0.5),
                actor="bench",
                reason=f"change {revision}",
                at=utcnow(),
            )
            pending.append(js.publish(subjects.config_log(service), encode(entry)))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def timed(
    read: Callable[[], Awaitable[list[ConfigApplied]]], rounds: int
) -> tuple[float, int]:
    """Median seconds of `rounds` calls of the coroutine function `read`, and its count."""
    seconds, count = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        entries = await read()
        seconds.append(time.perf_counter() - t0)
        count = len(entries)
    return statistics.median(seconds), count


async def main(args: argparse.Namespace) -> None:
    with processes(worker("governor")) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream(timeout=30)
        bus = Bus(nc, logs.get_logger("bench"))
        await ensure_stream(bus, history=max(10_000, args.revisions))
        await fill(js, args.revisions)
        store = ConfigStore(bus, timeout_s=30)

        old_s, old_n = await timed(lambda: one_request_per_revision(js, "api"), ROUNDS)
        new_s, new_n = await timed(lambda: store.history("api"), ROUNDS)
        assert old_n == new_n == args.revisions, (old_n, new_n)
        newest_s, newest_n = await timed(lambda: store.history("api", limit=1000), ROUNDS)

        query = msgspec.json.encode(HistoryQuery(limit=1000))
        await wait_for_responder(nc, subjects.config("api"), Empty())
        decode = msgspec.json.Decoder(ConfigHistory).decode

        async def request() -> list[ConfigApplied]:
            reply = await nc.request(subjects.history("api"), query, timeout=30)
            return decode(reply.data).entries

        e2e_s, e2e_n = await timed(request, ROUNDS)
        await nc.close()

    n = args.revisions
    print(f"history of {n:,} revisions (and {n:,} of another service), median of {ROUNDS}:")
    print(f"  one request per revision (before): {old_s * 1000:,.0f} ms")
    print(f"  one ordered consumer (now): {new_s * 1000:,.0f} ms = {old_s / new_s:.1f}x faster")
    print(f"  newest 1,000 (limit): {newest_s * 1000:,.0f} ms ({newest_n} entries)")
    print(f"  governor.v1.history, limit 1,000, end to end: {e2e_s * 1000:,.0f} ms ({e2e_n})")
    before = "one request per revision (before)"
    emit(
        "history",
        [
            Row(
                area="config history",
                measure=f"read {n:,} revisions, one ordered consumer",
                baseline=before,
                value=new_s * 1000,
                base=old_s * 1000,
                unit="ms",
                ratio=new_s / old_s,
                target="< 1x",
                met=new_s < old_s,
            ),
            Row(
                area="config history",
                measure=f"governor.v1.history end to end, newest 1,000 of {n:,} (info)",
                baseline=before,
                value=e2e_s * 1000,
                base=old_s * 1000,
                unit="ms",
                ratio=e2e_s / old_s,
            ),
        ],
        {"old_ms": old_s * 1000, "new_ms": new_s * 1000, "e2e_ms": e2e_s * 1000},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the same 10,000 revisions")
    parser.add_argument("--revisions", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
