"""`baton watch`: registry events, applied config changes and the balancer's ejections
(`balancer.v1.events`), one line each, as they come.

It reconnects by itself after a NATS outage (events published meanwhile are missed, and it
says so on stderr). Ctrl-C or SIGTERM stops it cleanly; `--count N` stops after N events.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

import click
import msgspec

from schemas import subjects
from schemas.balancer import OutlierEvent
from schemas.governor import ConfigApplied
from schemas.registry import InstanceEvent
from services.cli import output

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.msg import Msg

    from services.cli.session import Session

__all__ = ["follow"]

_object = msgspec.json.Decoder(dict[str, Any])


class _Watch:
    """Prints each message it is handed, and sets `stop` after `count` of them."""

    def __init__(self, session: Session, count: int | None) -> None:
        self.session = session
        self.count = count
        self.printed = 0
        self.stop = asyncio.Event()
        self.broken: BrokenPipeError | None = None  # stdout's reader left (`| head`)

    def printer(
        self, kind: type[Any], line: Callable[[Any], str]
    ) -> Callable[[Msg], Awaitable[None]]:
        decoder = msgspec.json.Decoder(kind)

        def text(msg: Msg) -> str:
            if self.session.json:  # any JSON object as sent, on one line: whitespace between
                _object.decode(msg.data)  # tokens may go, newlines in strings are escaped
                return msg.data.replace(b"\r", b"").replace(b"\n", b" ").decode()
            return line(decoder.decode(msg.data))

        async def on_msg(msg: Msg) -> None:
            if self.stop.is_set():
                return
            try:
                click.echo(text(msg))
            except msgspec.DecodeError as exc:
                click.echo(f"baton: cannot read a message on {msg.subject} ({exc})", err=True)
                return
            except BrokenPipeError as exc:  # nats-py would swallow it: stop, re-raise later
                self.broken = exc
                self.stop.set()
                return
            self.printed += 1
            if self.count is not None and self.printed >= self.count:
                self.stop.set()

        return on_msg

    async def disconnected(self) -> None:
        if not self.stop.is_set():  # closing at the end disconnects too; that is no news
            click.echo(
                "baton: disconnected from NATS; reconnecting (events meanwhile are missed)",
                err=True,
            )

    async def reconnected(self) -> None:
        click.echo("baton: reconnected", err=True)


async def follow(session: Session, service: str | None, count: int | None) -> None:
    """Print events of `service` (or of every service) until stopped, or `count` of them."""
    watch = _Watch(session, count)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, watch.stop.set)
    if service is None:
        events, applied = subjects.every(subjects.EVENTS), subjects.every(subjects.APPLIED)
        outliers = subjects.every(subjects.BALANCER_EVENTS)
    else:
        events, applied = subjects.events(service), subjects.applied(service)
        outliers = subjects.balancer_events(service)
    async with session.connect(
        follow=True, disconnected=watch.disconnected, reconnected=watch.reconnected
    ) as link:
        try:
            await link.nc.subscribe(events, cb=watch.printer(InstanceEvent, output.event_line))
            await link.nc.subscribe(applied, cb=watch.printer(ConfigApplied, output.applied_line))
            await link.nc.subscribe(outliers, cb=watch.printer(OutlierEvent, output.outlier_line))
            # Two round trips: nats-py's flush() may write its PING ahead of a queued SUB.
            # Then the server has both subscriptions (or refused one): nothing is missed.
            await link.unless_refused(link.nc.flush())
            await link.unless_refused(link.nc.flush())
            click.echo(
                f"baton: watching {events}, {applied} and {outliers}; Ctrl-C stops", err=True
            )
            await link.unless_refused(watch.stop.wait())
        finally:
            watch.stop.set()  # what follows (closing) is no disconnection to report
    if watch.broken:
        raise watch.broken  # click ends quietly on a broken pipe
