"""A follower of a stream: every record stored, in order, from a start and then as stored.

An ordered consumer (ephemeral, in-order, flow controlled) delivers each record once to
`on_record`. The follower is a lifecycle child: a worker `enter()`s it, and leaving ends
the subscription. It starts in the background, retrying by the one policy
(services/retry.py) while JetStream does not answer, so a worker runs on what it has
rather than not at all; `caught_up` is set once every record that existed when it started
has been delivered (at once for an empty or missing stream).

After every reconnect it subscribes again from the record after the last one delivered
(the ephemeral consumer may have died with a server; nats-py would only notice after two
missed heartbeats, 10 s), and lets go of the old subscription once the new one is made.
While both deliver, and whenever nats-py resets a consumer itself, a record may come
twice: one at or below the last one delivered is passed over, so each reaches
`on_record` once, in stream order. One record that `on_record` fails on is counted in
`bad` and logged; the follower goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js import api

from services.lifecycle import Lifecycle
from services.natsclient import unsubscribe
from services.retry import Backoff
from services.stream.record import Record, from_delivered

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus
    from services.natsclient import Subscription

__all__ = ["LOOK_AGAIN", "RETRY", "Follower"]

_EVENTS = (
    "watching",
    "watch_failed",
    "stream_missing",
    "stream_replaced",
    "follow_restarted",
    "entry_failed",
)

RETRY = Backoff(base_s=1.0, cap_s=10.0)  # while JetStream does not answer
# while the stream is missing (its owner has not run yet): jittered, but never long, since
# the owner may create it any moment and readers should find it soon after
LOOK_AGAIN = Backoff(base_s=1.0, cap_s=2.0)


class Follower(Lifecycle):
    """Calls `on_record` for each record of `stream` under `subject` (a filter): from the
    latest of every subject (`last_per_subject`) or from the first, then each new one.

    `prepare` runs before each attempt to subscribe (a stream's owner creates it there);
    without it a missing stream counts as empty, looked for again by `look_again`. `noun`
    names the log events (`{noun}.watching`, `.watch_failed`, `.stream_missing`,
    `.entry_failed`).
    """

    def __init__(  # noqa: PLR0913  # its dependencies and its stream, passed in
        self,
        bus: Bus,
        log: FilteringBoundLogger,
        on_record: Callable[[Record], Awaitable[None] | None],
        *,
        stream: str,
        subject: str,
        noun: str,
        last_per_subject: bool = True,
        prepare: Callable[[], Awaitable[None]] | None = None,
        retry: Backoff = RETRY,
        look_again: Backoff = LOOK_AGAIN,
        timeout_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.log = log
        self.on_record = on_record
        self.stream = stream
        self.subject = subject
        self.noun = noun
        self.events = {e: f"{noun}.{e}" for e in _EVENTS}  # structlog event names
        self.last_per_subject = last_per_subject
        self.prepare = prepare
        self.retry = retry
        self.look_again = look_again
        self.js: JetStreamContext = bus.jetstream(timeout_s=timeout_s)
        self.caught_up = asyncio.Event()
        self.following = False  # subscribed to the stream
        self.applied = 0  # records `on_record` took
        self.bad = 0  # records it failed on (logged)
        self.last_seq = 0  # the stream sequence of the last record delivered
        self.restarts = 0  # subscriptions made again after a reconnect
        self._task_name = f"{noun}.watch"
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        # a subscription being made: nats-py subscribes on the server before it asks
        # JetStream for the consumer, so a cancel in between would leave that subscription
        # behind; it is made apart (shielded) and `_let_go` undoes it
        self._making: asyncio.Future[JetStreamContext.PushSubscription] | None = None
        self._one_at_a_time = asyncio.Lock()

    async def start(self) -> None:
        self.on_close(self._let_go)
        self._task = self.spawn(self._follow(), name=self._task_name)
        self.bus.reconnect_hooks.append(self._on_reconnect)
        self.on_close(self._unhook)  # first on leaving: no restart starts after it

    def restart(self) -> None:
        """Subscribe again from the record after the last one delivered (in the background;
        nothing to do while a subscription is being made: it starts from there)."""
        if self._hooked() and (self._task is None or self._task.done()):
            self._task = self.spawn(self._follow(), name=self._task_name)

    def _hooked(self) -> bool:
        return self._on_reconnect in self.bus.reconnect_hooks

    async def _on_reconnect(self) -> None:
        self.restart()

    async def _unhook(self) -> None:
        self.bus.reconnect_hooks.remove(self._on_reconnect)

    async def _follow(self) -> None:
        """Subscribe, then let go of the subscription before (kept until now: JetStream may
        be slow to answer after a reconnect); ends once subscribed."""
        new = await self._subscribe()
        old, self._sub = self._sub, new
        if old is not None:
            await unsubscribe(old)
            self.restarts += 1
            self.log.info(self.events["follow_restarted"], after_seq=self.last_seq)

    async def _let_go(self) -> None:  # a record cut short comes again on the next start
        self.following = False
        making, self._making = self._making, None
        if making is not None:
            with contextlib.suppress(Exception):  # it failed: nothing was left to undo
                await unsubscribe(await making)
        sub, self._sub = self._sub, None
        if sub is not None:
            await unsubscribe(sub)

    async def _subscribe(self) -> Subscription:
        retry = self.retry.retry()
        look = self.look_again.retry()
        missing = False
        while True:
            try:
                if self.prepare is not None:
                    await self.prepare()
                info = await self.js.stream_info(self.stream)
                making = self._making = asyncio.ensure_future(
                    self.js.subscribe(
                        self.subject,
                        cb=self._on_msg,
                        ordered_consumer=True,
                        config=self._start_at(info.state.last_seq),
                        stream=self.stream,
                    )
                )
                sub = await asyncio.shield(making)
                self._making = None
            except nats.js.errors.NotFoundError:
                if not missing:  # its owner has not run yet: nothing to deliver
                    missing = True
                    self.log.info(self.events["stream_missing"], stream=self.stream)
                self.caught_up.set()
                await look.wait()
                continue
            except (nats.errors.Error, OSError) as exc:
                self.log.warning(
                    self.events["watch_failed"], error=repr(exc), attempt=retry.attempts
                )
                await retry.wait()
                continue
            self.following = True
            if info.state.messages == 0 or info.state.last_seq <= self.last_seq:
                self.caught_up.set()  # nothing (more) to catch up with
            self.log.info(self.events["watching"], entries=info.state.messages)
            return sub

    def _start_at(self, stream_last_seq: int) -> api.ConsumerConfig:
        if self.last_seq and stream_last_seq < self.last_seq:
            # the stream is not the one followed before (made again, its records lost)
            self.log.warning(
                self.events["stream_replaced"], stream=self.stream, after_seq=self.last_seq
            )
            self.last_seq = 0
        if self.last_seq:
            return api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.last_seq + 1,
            )
        policy = (
            api.DeliverPolicy.LAST_PER_SUBJECT if self.last_per_subject else api.DeliverPolicy.ALL
        )
        return api.ConsumerConfig(deliver_policy=policy)

    async def _on_msg(self, msg: Msg) -> None:
        record = from_delivered(msg)
        # one record at a time: during a restart two subscriptions deliver at once, and a
        # newer record must not be applied while an older one still is
        async with self._one_at_a_time:
            if record.seq <= self.last_seq:
                return  # delivered already (a consumer made again from an earlier record)
            self.last_seq = record.seq
            try:
                done = self.on_record(record)
                if inspect.isawaitable(done):
                    await done
                self.applied += 1
            except Exception:  # one bad record must not stop the follower
                self.bad += 1
                self.log.exception(self.events["entry_failed"], subject=record.subject)
        if record.pending == 0:
            self.caught_up.set()
