"""`baton status`: every running worker replica, from the NATS services protocol.

One `$SRV.STATS` request (or `$SRV.STATS.<name>`), and every reply that comes within
`--wait` seconds: each worker process answers once (services/micro.py), so replicas show
one row each, with their uptime and their endpoints' counts.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
import msgspec

from schemas import subjects
from schemas.micro import Stats
from services.cli import output
from services.cli.session import Session, Unanswered

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["gather", "render", "status"]

_PREFIX = "baton-"  # the workers' names (services/micro.py)
_decode = msgspec.json.Decoder(Stats).decode
_EPOCH = datetime.fromtimestamp(0, UTC)


async def gather(nc: Client, subject: str, wait_s: float) -> list[bytes]:
    """Every reply to one request on `subject` within `wait_s` seconds, as sent."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[bytes] = []
    try:
        await nc.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:  # nats-py's TimeoutError is one
                break
            if msg.data:  # not the server's "no responders" status (empty, headers only)
                replies.append(msg.data)
    finally:
        await sub.unsubscribe()
    return replies


def _duration_ns(ns: int) -> str:
    us = ns / 1000
    if us < 1000:
        return f"{us:.0f}us"
    ms = us / 1000
    return f"{ms:.1f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


_as_time = msgspec.json.Decoder(datetime).decode


def _started(stats: Stats) -> datetime | None:
    """`started` as any ADR-32 service writes it: Baton and nats-py microseconds, nats.js
    milliseconds, nats.go nanoseconds (RFC 3339); None when it is no time at all."""
    try:
        at = _as_time(msgspec.json.encode(stats.started))
    except msgspec.ValidationError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _uptime(stats: Stats, now: datetime) -> str:
    started = _started(stats)
    return output.age(started, now) if started else "-"


def render(replicas: list[Stats], now: datetime | None = None) -> str:
    """One row per replica, then one row per endpoint of each."""
    now = now or datetime.now(UTC)
    head = output.table(
        ("WORKER", "ID", "VERSION", "UPTIME", "PID", "HOST", "REQUESTS", "ERRORS"),
        [
            (
                s.name,
                s.id,
                s.version,
                _uptime(s, now),
                (s.metadata or {}).get("pid", "-"),
                (s.metadata or {}).get("host", "-"),
                str(sum(e.num_requests for e in s.endpoints)),
                str(sum(e.num_errors for e in s.endpoints)),
            )
            for s in replicas
        ],
    )
    rows = [
        (
            s.name,
            s.id,
            e.name,
            e.subject,
            e.queue_group or "-",
            str(e.num_requests),
            str(e.num_errors),
            _duration_ns(e.average_processing_time),
            e.last_error or "-",
        )
        for s in replicas
        for e in s.endpoints
    ]
    if not rows:
        return head
    body = output.table(
        ("WORKER", "ID", "ENDPOINT", "SUBJECT", "QUEUE", "REQUESTS", "ERRORS", "AVG", "LAST ERROR"),
        rows,
    )
    return f"{head}\n\n{body}"


@click.command()
@click.argument("worker", required=False)
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Seconds to gather replies for.",
)
@click.option("--all", "everyone", is_flag=True, help="Also NATS services that are not Baton's.")
@click.pass_obj
def status(session: Session, worker: str | None, wait: float, *, everyone: bool) -> None:
    """List every running worker replica: name, id, version, uptime, and its endpoints with
    their requests and errors (from `$SRV.STATS`, as `nats micro stats` reads it).

    WORKER narrows it to one kind: registry, balancer, governor, kv, collector, gateway (or
    its full name, baton-balancer).
    """
    name = None
    if worker:
        name = worker if worker.startswith(_PREFIX) or everyone else _PREFIX + worker
        try:
            subjects.check_name(name, "worker name")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="WORKER") from None
    subject = subjects.srv("STATS", name)

    async def ask() -> list[bytes]:
        async with session.connect() as link:
            return await link.unless_refused(gather(link.nc, subject, wait))

    replicas: list[tuple[Stats, bytes]] = []
    for raw in asyncio.run(ask()):
        try:
            stats = _decode(raw)
        except msgspec.MsgspecError as exc:  # not ADR-32's shape: another kind of service
            click.echo(f"baton: skipped a reply that is not a stats_response ({exc})", err=True)
            continue
        if everyone or stats.name.startswith(_PREFIX):
            replicas.append((stats, raw))
    if not replicas:
        raise Unanswered(
            f"no {name or 'Baton worker'} answered {subject} within {wait:g} s; is the stack "
            "running? (just up; --wait waits longer)"
        )
    replicas.sort(key=lambda pair: (pair[0].name, _started(pair[0]) or _EPOCH, pair[0].id))
    if session.json:  # one object: every reply as its worker sent it
        click.echo(b'{"workers":[' + b",".join(raw for _, raw in replicas) + b"]}")
        return
    click.echo(render([stats for stats, _ in replicas]))
