"""A bounded buffer of line-protocol points, written to InfluxDB in batches, with retries.

`add` and `add_many` are synchronous and O(1) a point, so a bus handler never waits for
InfluxDB. A loop writes a batch when `batch_points` wait or `flush_s` has passed,
whichever comes first; `writers` loops do so side by side, so InfluxDB ingests one batch
while the next is built and sent (one at a time, a write's round trip is dead time for
InfluxDB, and a flood of messages makes that round trip long). While InfluxDB is away
(`RetryableWriteError`) or refuses the set-up (`SetupError`), a batch goes back to the
front of the buffer and is sent again after a backoff (services/retry.py: from 0.5 s,
jittered, growing up to `retry_max_s`; a longer Retry-After is honoured up to
`retry_max_s`). When the buffer holds
`max_buffer` points, the oldest are dropped: counted, and logged at most every few seconds.

Every point ends up counted once: received = written + rejected + dropped + buffered.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING

from services.collector.writer import RetryableWriteError, SetupError, WriteError
from services.lifecycle import Lifecycle
from services.retry import Backoff

if TYPE_CHECKING:
    from collections.abc import Iterable

    from structlog.typing import FilteringBoundLogger

    from services.collector.writer import InfluxWriter

__all__ = ["Batcher", "retry_wait"]

_FIRST_RETRY_S = 0.5
_LOG_EVERY_S = 5.0  # at most one line a kind this often, with running counts


def retry_wait(backoff_s: float, retry_after_s: float | None, retry_max_s: float) -> float:
    """The wait before sending a batch again: the policy's, or the server's Retry-After
    when that is longer, but never a Retry-After beyond `retry_max_s`."""
    return max(backoff_s, min(retry_after_s or 0.0, retry_max_s))


class _Every:
    """True at most once every `seconds` (monotonic), for rate-limited log lines."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


class Batcher(Lifecycle):
    """Owns the buffer and the flush loop; the writer stays the caller's to close."""

    def __init__(  # noqa: PLR0913  # each is a setting of its own
        self,
        writer: InfluxWriter,
        log: FilteringBoundLogger,
        *,
        batch_points: int = 5000,
        flush_s: float = 1.0,
        max_buffer: int = 1_000_000,
        retry_max_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        writers: int = 2,
    ) -> None:
        if batch_points < 1 or max_buffer < 1 or writers < 1:
            raise ValueError("batch_points, max_buffer and writers must be at least 1")
        if flush_s <= 0 or retry_max_s <= 0 or stop_timeout_s < 0:
            raise ValueError("flush_s and retry_max_s must be > 0, stop_timeout_s >= 0")
        self.writer = writer
        self.log = log
        self.batch_points = min(batch_points, max_buffer)
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self.retry_max_s = retry_max_s
        self.backoff = Backoff(base_s=min(_FIRST_RETRY_S, retry_max_s), cap_s=retry_max_s)
        self.stop_timeout_s = stop_timeout_s
        self.writers = writers
        self.received = self.written = self.retried = self.dropped = self.rejected = 0
        self._buf: collections.deque[str] = collections.deque()
        # the batches being written, out of `_buf` meanwhile, by the writing loop's number
        self._inflight: dict[int, list[str]] = {}
        self._inflight_points = 0
        self._wake = asyncio.Event()
        self._needs_ensure = False  # after a SetupError: set up again before writing
        self._stopped = False
        self._log_dropped = _Every(_LOG_EVERY_S)
        self._log_retry = _Every(_LOG_EVERY_S)
        self._log_rejected = _Every(_LOG_EVERY_S)

    # -- what callers use ----------------------------------------------------------------
    def add(self, line: str) -> None:
        self.received += 1
        if self._stopped:
            self._drop(1)
            return
        buf = self._buf
        buf.append(line)
        # _settle inlined: this runs once a point, and while a batch is being written the
        # buffer often holds a full batch already, with the loop woken
        n = len(buf)
        if n + self._inflight_points > self.max_buffer:
            self._settle()
        elif n >= self.batch_points and not self._wake.is_set():
            self._wake.set()

    def add_many(self, lines: Iterable[str]) -> None:
        if self._stopped:
            n = sum(1 for _ in lines)
            self.received += n
            self._drop(n)
            return
        before = len(self._buf)
        self._buf.extend(lines)
        self.received += len(self._buf) - before
        self._settle()

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._inflight_points

    @property
    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "written": self.written,
            "retried": self.retried,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "buffered": self.buffered,
        }

    async def start(self) -> None:
        for n in range(self.writers):
            self.spawn(self._flush_loop(n), f"batcher.flush.{n}")

    async def stop(self) -> None:
        """Write what is buffered within `stop_timeout_s`; count the rest as dropped.

        A write the deadline cuts short counts as dropped though InfluxDB may have stored
        it; a batch the cancelled loop was writing is sent again (InfluxDB keeps one copy
        of a point with the same series and timestamp, so that is harmless)."""
        await self.close()  # the loops put their batches back at the front
        if self._stopped:
            return
        deadline = asyncio.get_running_loop().time() + self.stop_timeout_s
        while self._buf and await self._send(0, deadline):
            pass
        self._stopped = True
        unwritten = self.buffered
        self._buf.clear()
        self._inflight.clear()
        self._inflight_points = 0
        self.dropped += unwritten
        log = self.log.warning if unwritten else self.log.info
        log("batcher.stopped", unwritten=unwritten, timeout_s=self.stop_timeout_s, **self.stats)

    # -- the buffer ------------------------------------------------------------------------
    def _settle(self) -> None:
        """Drop the oldest points beyond `max_buffer`; wake the loop when a batch is full."""
        excess = len(self._buf) + self._inflight_points - self.max_buffer
        if excess > 0:  # never more than was just added, so `_buf` holds that many
            popleft = self._buf.popleft
            for _ in range(excess):
                popleft()
            self._drop(excess)
        if len(self._buf) >= self.batch_points and not self._wake.is_set():
            self._wake.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._log_dropped():
            self.log.warning(
                "buffer.overflowed",
                dropped=self.dropped,
                buffered=self.buffered,
                max_buffer=self.max_buffer,
                stopped=self._stopped,
            )

    def _take(self, slot: int) -> list[str]:
        popleft = self._buf.popleft
        batch = [popleft() for _ in range(min(len(self._buf), self.batch_points))]
        if batch:
            self._inflight[slot] = batch
            self._inflight_points += len(batch)
        return batch

    def _done(self, slot: int) -> list[str]:
        batch = self._inflight.pop(slot, [])
        self._inflight_points -= len(batch)
        return batch

    def _put_back(self, slot: int) -> None:
        self._buf.extendleft(reversed(self._done(slot)))

    # -- writing -----------------------------------------------------------------------------
    async def _flush_loop(self, slot: int) -> None:
        while True:
            try:
                if len(self._buf) < self.batch_points:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self.flush_s):
                            await self._wake.wait()
                    except TimeoutError:
                        pass  # flush_s is up: whatever waits goes now
                    else:
                        if len(self._buf) < self.batch_points:
                            continue  # another loop took the full batch
                if self._buf:
                    await self._send(slot, None)
            except Exception:  # a bug must not stop the writing; the points stay buffered
                self._put_back(slot)
                self.log.exception("batcher.loop_failed", buffered=self.buffered)
                await asyncio.sleep(self.flush_s)

    async def _send(self, slot: int, deadline: float | None) -> bool:
        """Write the batch at the front, retrying until it is written; False if the
        deadline (event-loop time) came first, with the batch still at the front."""
        loop = asyncio.get_running_loop()
        retry = self.backoff.retry()
        failures = 0
        failed_at = 0.0
        while True:
            batch = self._take(slot)
            if not batch:  # dropped while we waited
                return True
            try:
                outcome = await self._attempt(batch, deadline)
            except asyncio.CancelledError:
                self._put_back(slot)
                raise
            except Exception:  # a bug in the writer, maybe for this batch only: drop it
                self._done(slot)
                self.dropped += len(batch)
                self.log.exception("batcher.batch_failed", points=len(batch))
                return True
            if isinstance(outcome, int):
                self._done(slot)
                self._written(batch, outcome)
                if failures:
                    self.log.info(
                        "influx.write_recovered",
                        attempts=failures + 1,
                        outage_s=round(loop.time() - failed_at, 1),
                        buffered=self.buffered,
                    )
                return True
            # Not written: the batch goes back to the front, in order, for the next try.
            self._put_back(slot)
            if outcome is None:
                return False
            self.retried += 1
            failed_at = failed_at or loop.time()
            failures += 1
            wait = retry_wait(retry.next_delay(), outcome.retry_after_s, self.retry_max_s)
            if self._log_retry() or failures == 1:
                self._log_failure(outcome, wait, failures)
            if not await self._pause(wait, deadline):
                return False

    @staticmethod
    async def _pause(wait: float, deadline: float | None) -> bool:
        """Sleep `wait` s; False (having slept until it) if the deadline comes first."""
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + wait >= deadline:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            return False
        await asyncio.sleep(wait)
        return True

    async def _attempt(self, batch: list[str], deadline: float | None) -> int | WriteError | None:
        """One try: the number of points rejected, the error to retry after, or None when
        the deadline came first."""
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                if self._needs_ensure:
                    await self.writer.ensure()
                    self._needs_ensure = False
                return await self.writer.write(batch)
        except SetupError as exc:
            self._needs_ensure = True  # e.g. the database was dropped: create it again
            return exc
        except RetryableWriteError as exc:
            return exc
        except TimeoutError:
            if timer.expired():
                return None
            raise  # not our deadline: a writer's bug

    def _log_failure(self, error: WriteError, wait: float, attempts: int) -> None:
        if isinstance(error, SetupError):
            self.log.error(
                "influx.setup_failed",
                error=str(error),
                retry_in_s=wait,
                attempts=attempts,
                **self.stats,
            )
        else:
            self.log.warning(
                "influx.write_failed",
                error=str(error),
                retry_in_s=wait,
                attempts=attempts,
                **self.stats,
            )

    def _written(self, batch: list[str], rejected: int) -> None:
        rejected = max(0, min(rejected, len(batch)))
        self.written += len(batch) - rejected
        if rejected:
            self.rejected += rejected
            if self._log_rejected():
                self.log.warning(
                    "influx.points_rejected",
                    rejected=rejected,
                    batch=len(batch),
                    total_rejected=self.rejected,
                    message=self.writer.last_rejection,
                )
