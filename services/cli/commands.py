"""The `baton` command group: global options and the read commands.

The write commands (`set`, `rollback`) are in `change.py`, `watch` in `watch.py`.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import TYPE_CHECKING

import click
import msgspec

from schemas import subjects
from schemas.balancer import STRATEGIES, Ejections, Endpoint, ResolveRequest
from schemas.governor import ConfigHistory, HistoryQuery, ServiceConfig
from schemas.registry import Empty, InstanceList, InstancesQuery, ServiceList
from services.cli import output
from services.cli.change import rollback, set_
from services.cli.kv import kv
from services.cli.params import SINCE_HELP, instance_ids, service_name, since
from services.cli.session import Failure, Session
from services.cli.status import status
from services.cli.watch import follow
from services.config import SettingsError, parse_servers

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["cli"]

pass_session = click.make_pass_decorator(Session)


def _servers(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_servers(value)  # the workers' own check: one sentence naming the bad URL
    except SettingsError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--nats-url",
    envvar="NATS_URL",
    callback=_servers,
    default="nats://127.0.0.1:4222",
    show_default=True,
    show_envvar=True,
    help="The NATS server; several as a comma-separated list.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the reply's JSON as sent, one object (watch: one per line).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds to wait for NATS and for each answer.",
)
@click.version_option(package_name="baton")
@click.pass_context
def cli(ctx: click.Context, nats_url: str, *, as_json: bool, timeout: float) -> None:
    """Operate Baton: look at services, instances and configs; change them; watch events;
    see the workers (status).

    Exit codes: 0 done, 1 a worker answered with an error, 2 usage error, 3 nothing
    answered (NATS or the worker is down). With --json, an error is one JSON object on
    stderr: {"code": ..., "message": ...}.
    """
    ctx.obj = Session(url=nats_url, json=as_json, timeout=timeout)


@cli.command()
@pass_session
def services(session: Session) -> None:
    """List the services that have registered instances."""
    session.show(subjects.SERVICES, Empty(), ServiceList, output.services)


@cli.command()
@click.argument("service", callback=service_name)
@pass_session
def instances(session: Session, service: str) -> None:
    """List SERVICE's instances, healthy or not, with operators' overrides applied.

    EJECTED says which instances the balancer ejected as outliers, and until when (`?`
    when no balancer answers); `--json` prints the registry's reply as sent.
    """
    if session.json:
        session.show(subjects.instances(service), InstancesQuery(), InstanceList, output.instances)
        return
    ejections: list[Ejections] = []

    def render(reply: InstanceList) -> str:
        return output.instances(reply, ejections=ejections[0] if ejections else None)

    try:
        raw = asyncio.run(session.request(subjects.ejections(service), Empty()))
        ejections.append(msgspec.json.decode(raw, type=Ejections))
    except (Failure, msgspec.ValidationError):
        pass  # the registry's view alone; the column shows `?`
    session.show(subjects.instances(service), InstancesQuery(), InstanceList, render)


@cli.command()
@click.argument("service", callback=service_name)
@pass_session
def checks(session: Session, service: str) -> None:
    """List SERVICE's active health checks (HTTP, TCP, gRPC): status and last output.

    The prober (python -m services.prober) runs them; the registry holds their statuses.
    """
    session.show(subjects.instances(service), InstancesQuery(), InstanceList, output.checks)


@cli.command()
@click.argument("service", callback=service_name)
@pass_session
def ejections(session: Session, service: str) -> None:
    """List SERVICE's instances the balancer ejected as outliers: why, and until when."""
    session.show(subjects.ejections(service), Empty(), Ejections, output.ejections)


@cli.command()
@click.argument("service", callback=service_name)
@click.option("--key", help="The key for consistent_hash.")
@click.option("--zone", help="Prefer instances in this zone.")
@click.option(
    "--strategy",
    metavar="NAME",
    help=f"Use this strategy for this request only: {', '.join(STRATEGIES)}.",
)
@click.option(
    "--exclude",
    metavar="ID",
    multiple=True,
    callback=instance_ids,
    help="An instance not to return; repeat it for several.",
)
@pass_session
def resolve(
    session: Session,
    service: str,
    key: str | None,
    zone: str | None,
    strategy: str | None,
    exclude: Sequence[str],
) -> None:
    """Ask the balancer for an endpoint of SERVICE, as a client would.

    As for any client, the balancer counts the endpoint as a request in flight on that
    instance until the instance next reports its load or BALANCER_PICK_TIMEOUT_S passes
    (no call report is sent: there was no call to time).
    """
    request = ResolveRequest(key=key, zone=zone, exclude=list(exclude), strategy=strategy)
    session.show(subjects.resolve(service), request, Endpoint, output.endpoint)


@cli.command()
@click.argument("service", callback=service_name)
@pass_session
def config(session: Session, service: str) -> None:
    """Show SERVICE's current config: revision, strategy, threshold, overrides."""
    session.show(subjects.config(service), Empty(), ServiceConfig, output.config)


@cli.command()
@click.argument("service", callback=service_name)
@click.option("--limit", type=click.IntRange(1, 100_000), help="Only the newest N revisions.")
@click.option("--since", "since_", callback=since, metavar="WHEN", help=f"From {SINCE_HELP} on.")
@pass_session
def history(
    session: Session, service: str, limit: int | None, since_: int | datetime | None
) -> None:
    """List the revisions of SERVICE's config, oldest first (all that fit one reply)."""
    query = HistoryQuery(
        limit=limit or 0,
        since_revision=since_ if isinstance(since_, int) else 0,
        since=since_ if isinstance(since_, datetime) else None,
    )
    filtered = limit is not None or since_ is not None
    session.show(
        subjects.history(service),
        query,
        ConfigHistory,
        functools.partial(output.history, filtered=filtered),
    )


@cli.command()
@click.argument("service", callback=service_name, required=False)
@click.option("--count", type=click.IntRange(min=1), help="Stop after N events.")
@pass_session
def watch(session: Session, service: str | None, count: int | None) -> None:
    """Print registry events and applied config changes, of SERVICE or of all, until Ctrl-C."""
    asyncio.run(follow(session, service, count))


cli.add_command(set_)
cli.add_command(kv)
cli.add_command(status)
cli.add_command(rollback)
