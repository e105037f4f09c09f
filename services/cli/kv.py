"""`baton kv get|put|del|ls|history|rollback|watch`: the config center's keys.

Values print as they are stored (bytes to stdout, for `get`); `--json` prints the kv
worker's reply as sent. A write says who made it and why (`--actor`, `--reason`), as the
governor's commands do; `--cas N` writes only if the key's modify index is still N.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

import click
import msgspec

from schemas import subjects
from schemas.kv import (
    KvDelete,
    KvEntries,
    KvEntry,
    KvHistory,
    KvHistoryQuery,
    KvPut,
    KvQuery,
    KvRollback,
    KvWritten,
)
from services.cli.change import _default_actor
from services.cli.session import Refused
from services.sdk.kv import change_of

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from services.cli.session import Session

__all__ = ["kv"]

_MAX_SHOWN = 60  # characters of a value in a table


def _subject(prefix: str, key: str) -> str:
    try:
        return subjects.kv_subject(prefix, key)
    except subjects.InvalidNameError as exc:
        raise click.BadParameter(str(exc)) from None


def _shown(value: bytes) -> str:
    text = value.decode("utf-8", "replace").replace("\n", "\\n")
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _ask(session: Session, subject: str, msg: msgspec.Struct, kind: type[Any]) -> Any:
    raw = asyncio.run(session.request(subject, msg))
    if session.json:
        click.echo(raw.decode())
        return None
    return msgspec.json.decode(raw, type=kind)


def _written(written: KvWritten, key: str, what: str) -> None:
    if not written.ok:
        raise Refused(
            f"409 {key!r} was not {what}: its modify index is not the --cas given; "
            "read it again (baton kv get) and retry",
            code=409,
        )
    index = written.entry.modify_index if written.entry else written.index
    click.echo(f"{what} {key} at index {index}")


def _who(f: Any) -> Any:
    f = click.option("--reason", default="", help="Why, for the history.")(f)
    return click.option(
        "--actor",
        default=_default_actor,
        show_default="$BATON_ACTOR, else your login name",
        help="Who makes the change, for the history.",
    )(f)


@click.group()
def kv() -> None:
    """The config center: keys with values up to 512 KiB, versioned, audited, pushed."""


@kv.command()
@click.argument("key")
@click.pass_obj
def get(session: Session, key: str) -> None:
    """Print KEY's value (as stored; --json: the entry, value in base64)."""
    found = _ask(session, _subject(subjects.KV_GET, key), KvQuery(), KvEntries)
    if found is None:
        return
    if not found.entries:
        raise Refused(f"404 no key {key!r}", code=404, reason=f"no key {key!r}")
    sys.stdout.buffer.write(found.entries[0].value)
    sys.stdout.buffer.flush()


@kv.command()
@click.argument("key")
@click.argument("value")
@click.option("--flags", type=click.IntRange(0, 2**64 - 1), default=0, help="Stored with it.")
@click.option("--cas", type=click.IntRange(min=0), help="Only if KEY's modify index is this.")
@_who
@click.pass_obj
def put(  # click passes each option
    session: Session, key: str, value: str, flags: int, cas: int | None, actor: str, reason: str
) -> None:
    """Store VALUE under KEY (`-` reads it from stdin)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    msg = KvPut(value=data, flags=flags, cas=cas, actor=actor, reason=reason)
    written = _ask(session, _subject(subjects.KV_PUT, key), msg, KvWritten)
    if written is not None:
        _written(written, key, "stored")


@kv.command("del")
@click.argument("key")
@click.option("--recurse", is_flag=True, help="Every key starting with KEY.")
@click.option("--cas", type=click.IntRange(min=0), help="Only if KEY's modify index is this.")
@_who
@click.pass_obj
def delete(  # click passes each option
    session: Session,
    key: str,
    recurse: bool,
    cas: int | None,
    actor: str,
    reason: str,
) -> None:
    """Delete KEY (with --recurse, every key starting with it)."""
    msg = KvDelete(recurse=recurse, cas=cas, actor=actor, reason=reason)
    written = _ask(session, _subject(subjects.KV_DELETE, key), msg, KvWritten)
    if written is None:
        return
    if not written.ok:
        _written(written, key, "deleted")
    click.echo(f"deleted {written.deleted} key(s) at index {written.index}")


@kv.command("ls")
@click.argument("prefix", default="")
@click.option("--separator", default="", help="List each folder once (e.g. /).")
@click.pass_obj
def ls(session: Session, prefix: str, separator: str) -> None:
    """List the keys starting with PREFIX: key, modify index, flags, size, value."""
    query = KvQuery(recurse=True, keys=bool(separator), separator=separator)
    subject = _subject(subjects.KV_GET, prefix)
    while True:  # a page at a time (each under one reply); --json prints each page
        raw = asyncio.run(session.request(subject, query))
        found = msgspec.json.decode(raw, type=KvEntries)
        if session.json:
            click.echo(raw.decode())
        elif separator:
            for name in found.keys:
                click.echo(name)
        else:
            for e in found.entries:
                size, shown = len(e.value), _shown(e.value)
                click.echo(f"{e.key}\t{e.modify_index}\t{e.flags}\t{size}\t{shown}")
        if not found.next_after:
            return
        query = msgspec.structs.replace(query, after=found.next_after)


def _revision(e: KvEntry) -> str:
    at = e.at.isoformat(timespec="seconds") if e.at else "?"
    restored = f" (from {e.restored})" if e.restored else ""
    value = "" if e.op == "delete" else _shown(e.value)
    return f"{e.modify_index}\t{e.op}{restored}\t{at}\t{e.actor}\t{e.reason}\t{value}"


@kv.command()
@click.argument("key")
@click.option("--limit", type=click.IntRange(1, 100_000), help="Only the newest N revisions.")
@click.pass_obj
def history(session: Session, key: str, limit: int | None) -> None:
    """List KEY's kept revisions, oldest first: index, op, when, who, why, value."""
    query = KvHistoryQuery(limit=limit or 0)
    found = _ask(session, _subject(subjects.KV_HISTORY, key), query, KvHistory)
    if found is not None:
        for e in found.revisions:
            click.echo(_revision(e))


@kv.command()
@click.argument("key")
@click.argument("index", type=click.IntRange(min=1))
@click.option("--cas", type=click.IntRange(min=0), help="Only if KEY's modify index is this.")
@_who
@click.pass_obj
def rollback(  # click passes each option
    session: Session, key: str, index: int, cas: int | None, actor: str, reason: str
) -> None:
    """Store again the value KEY had at INDEX (a revision `baton kv history` lists)."""
    msg = KvRollback(to_index=index, cas=cas, actor=actor, reason=reason)
    written = _ask(session, _subject(subjects.KV_ROLLBACK, key), msg, KvWritten)
    if written is not None:
        _written(written, key, f"restored index {index} of")


@kv.command()
@click.argument("prefix", default="")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N changes.")
@click.pass_obj
def watch(session: Session, prefix: str, count: int | None) -> None:
    """Print each change to a key starting with PREFIX as it is stored, until Ctrl-C."""
    asyncio.run(_watch(session, prefix, count))


async def _watch(session: Session, prefix: str, count: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    printed = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal printed
        if stop.is_set():
            return
        entry = change_of(msg)
        if not entry.key.startswith(prefix):
            return
        if session.json:
            click.echo(msg.data.decode())
        else:
            click.echo(f"{entry.key}\t{_revision(entry)}")
        printed += 1
        if count is not None and printed >= count:
            stop.set()

    async with session.connect(follow=True) as link:
        await link.nc.subscribe(_watch_subject(prefix), cb=on_msg)
        await link.unless_refused(link.nc.flush())
        await link.unless_refused(link.nc.flush())
        click.echo(f"baton: watching keys under {prefix!r}; Ctrl-C stops", err=True)
        await link.unless_refused(stop.wait())


def _watch_subject(prefix: str) -> str:
    try:
        return subjects.kv_watch(prefix)
    except subjects.InvalidNameError as exc:
        raise click.BadParameter(str(exc)) from None
