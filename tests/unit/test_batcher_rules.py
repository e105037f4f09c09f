"""The collector batcher's rules, without InfluxDB: what overflows, what is retried when.

(services/collector/batcher.py; the writes themselves are tested against a real influxd
in tests/integration/test_influx_writes.py.) Every point is counted once:
received = written + rejected + dropped + buffered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from services import logs
from services.collector.batcher import Batcher, retry_wait

if TYPE_CHECKING:
    from services.collector.writer import InfluxWriter

LOG = logs.get_logger("test")
NO_WRITER = cast("InfluxWriter", None)  # these rules never reach the writer


def batcher(**kw: int) -> Batcher:
    return Batcher(NO_WRITER, LOG, **kw)


def balanced(b: Batcher) -> bool:
    s = b.stats
    return s["received"] == s["written"] + s["rejected"] + s["dropped"] + s["buffered"]


def points(n: int, start: int = 0) -> list[str]:
    return [f"calls,service=api latency_ms={i}" for i in range(start, start + n)]


# -- overflow ------------------------------------------------------------------------------
def test_below_the_limit_nothing_is_dropped() -> None:
    b = batcher(max_buffer=10, batch_points=5)
    b.add_many(points(10))
    assert (b.stats["buffered"], b.stats["dropped"]) == (10, 0)
    assert balanced(b)


def test_past_the_limit_the_oldest_go_one_by_one() -> None:
    b = batcher(max_buffer=10, batch_points=5)
    for line in points(13):
        b.add(line)
    assert (b.stats["received"], b.stats["buffered"], b.stats["dropped"]) == (13, 10, 3)
    assert list(b._buf) == points(10, start=3)  # the newest stay
    assert balanced(b)


def test_a_burst_past_the_limit_keeps_its_newest() -> None:
    b = batcher(max_buffer=10, batch_points=5)
    b.add_many(points(4))
    b.add_many(points(25, start=4))
    assert (b.stats["buffered"], b.stats["dropped"]) == (10, 19)
    assert list(b._buf) == points(10, start=19)
    assert balanced(b)


def test_a_batch_being_written_counts_against_the_limit() -> None:
    b = batcher(max_buffer=10, batch_points=6)
    b.add_many(points(10))
    taken = b._take(0)  # a write in flight holds 6 of the 10
    assert taken == points(6)
    b.add_many(points(3, start=10))  # 13 held: the 3 oldest still buffered go
    assert (b.stats["buffered"], b.stats["dropped"]) == (10, 3)
    assert list(b._buf) == points(4, start=9)
    assert balanced(b)


def test_after_stop_points_are_counted_as_dropped_not_kept() -> None:
    b = batcher(max_buffer=10)
    b._stopped = True
    b.add("one")
    b.add_many(points(4))
    assert (b.stats["received"], b.stats["dropped"], b.stats["buffered"]) == (5, 5, 0)
    assert balanced(b)


def test_a_full_batch_wakes_the_writing_loop() -> None:
    b = batcher(max_buffer=100, batch_points=5)
    b.add_many(points(4))
    assert not b._wake.is_set()
    b.add("the fifth")
    assert b._wake.is_set()


def test_the_batch_is_never_larger_than_the_buffer() -> None:
    assert batcher(max_buffer=10, batch_points=5000).batch_points == 10


# -- retries -------------------------------------------------------------------------------
def test_a_batch_not_written_goes_back_to_the_front_in_order() -> None:
    b = batcher(max_buffer=100, batch_points=5)
    b.add_many(points(8))
    assert b._take(0) == points(5)
    b.add_many(points(2, start=8))  # arrived while the write was failing
    b._put_back(0)
    assert list(b._buf) == points(10)
    assert b.stats["buffered"] == 10
    assert balanced(b)


@pytest.mark.parametrize(
    ("backoff", "retry_after", "expected"),
    [
        (0.7, None, 0.7),  # no Retry-After: the policy's wait
        (0.7, 0.2, 0.7),  # a shorter one does not hurry us
        (0.7, 12.0, 12.0),  # a longer one is honoured...
        (0.7, 120.0, 30.0),  # ...up to retry_max_s
        (30.0, 0.0, 30.0),
    ],
)
def test_the_wait_before_a_retry(
    backoff: float, retry_after: float | None, expected: float
) -> None:
    assert retry_wait(backoff, retry_after, 30.0) == expected


def test_the_backoff_starts_at_half_a_second_and_stops_at_retry_max_s() -> None:
    b = Batcher(NO_WRITER, LOG, retry_max_s=8.0)
    assert (b.backoff.base_s, b.backoff.cap_s) == (0.5, 8.0)
    short = Batcher(NO_WRITER, LOG, retry_max_s=0.2)
    assert (short.backoff.base_s, short.backoff.cap_s) == (0.2, 0.2)


@pytest.mark.parametrize(
    "kw",
    [{"batch_points": 0}, {"max_buffer": 0}, {"writers": 0}, {"flush_s": 0}, {"retry_max_s": 0}],
)
def test_settings_out_of_range_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Batcher(NO_WRITER, LOG, **kw)  # type: ignore[arg-type]
