"""`baton set` and `baton rollback`: the governor's write commands.

Each `set` command sends one ConfigChange and prints the ConfigApplied: one new revision.
Every write command takes `--actor`, `--reason` and `--expected-revision`; they are kept
in `ctx.meta` so that each command's function sees only its own arguments.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import click
import msgspec

from schemas import subjects
from schemas.errors import explain
from schemas.governor import ConfigApplied, ConfigChange, OutlierPatch, OverridePatch, Rollback
from schemas.registry import InstanceList, InstancesQuery
from services.cli import output
from services.cli.params import instance_ids, key_values, service_name
from services.cli.session import Link, Refused, Unanswered, json_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from services.cli.session import Session

__all__ = ["rollback", "set_"]

_WHO: Final = "baton.who"
_OVERRIDES: Final = ("weight", "port", "metadata", "drained")


def _default_actor() -> str:
    try:
        return os.environ.get("BATON_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the password database
        return ""


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_WHO, {})[param.name] = value
    return value


def _who_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--actor, --reason, --expected-revision on a write command."""
    options = [
        click.option(
            "--actor",
            default=_default_actor,
            show_default="$BATON_ACTOR, else your login name",
            expose_value=False,
            callback=_keep,
            help="Who makes the change, for the history.",
        ),
        click.option(
            "--reason",
            default="",
            expose_value=False,
            callback=_keep,
            help="Why, for the history.",
        ),
        click.option(
            "--expected-revision",
            type=click.IntRange(min=0),
            expose_value=False,
            callback=_keep,
            help="Apply only if the config is still at this revision (else 409).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _set_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """A `set` command's options: --actor, --reason, --expected-revision and --strict."""
    f = click.option(
        "--strict",
        is_flag=True,
        expose_value=False,
        callback=_keep,
        help="Refuse when the registry knows no such service or instance (else: warn).",
    )(f)
    return _who_options(f)


def _who(ctx: click.Context) -> dict[str, Any]:
    who: dict[str, Any] = dict(ctx.meta[_WHO])
    who.pop("strict", None)
    if not who["actor"]:
        raise click.UsageError("say who makes the change: --actor NAME, or set BATON_ACTOR", ctx)
    return who


@dataclass(frozen=True)
class _Target:
    session: Session
    service: str


def _send(**change: Any) -> None:
    """Send one ConfigChange to the service of the `set` group, and print the result."""
    ctx = click.get_current_context()
    target: _Target = ctx.obj  # every set command runs under the `set` group
    msg = ConfigChange(**_who(ctx), **change)
    session, subject = target.session, subjects.change(target.service)
    strict = bool(ctx.meta[_WHO].get("strict"))
    instances = sorted(change.get("instances") or ())

    async def checked() -> bytes:  # one connection for the check and the change
        async with session.connect() as link:
            if not change.get("delete"):  # forgetting a config needs no registered instance
                _check_known(target, await _unknown(target, link, instances), strict=strict)
            return await session.ask(link, subject, msg)

    session.print_reply(asyncio.run(checked()), subject, ConfigApplied, output.applied)


async def _unknown(target: _Target, link: Link, instances: list[str]) -> tuple[int, str]:
    """(code, what the registry does not know of the change's target); (0, "") when it
    knows it all.

    Configuring ahead of a deployment is allowed (the config applies once the instances
    register); a typo is the common case, so it is said.
    """
    service, session = target.service, target.session
    try:
        raw = await session.ask(link, subjects.instances(service), InstancesQuery())
    except Unanswered as exc:
        return 503, f"could not ask the registry whether it knows {service!r} ({exc.reason})"
    except Refused as exc:
        if exc.code == 403:  # this NATS user may not read the registry: say so only if strict
            link.forgive()  # the change itself may still be allowed
            return 403, f"could not ask the registry whether it knows {service!r} ({exc.reason})"
        if exc.code != 404:  # only "no such service" is an answer here
            raise
        return 404, f"the registry knows no service {service!r} (no instance ever registered)"
    known = {i.instance_id for i in msgspec.json.decode(raw, type=InstanceList).instances}
    missing = [iid for iid in instances if iid not in known]
    if not missing:
        return 0, ""
    return 404, (
        f"the registry knows no instance {', '.join(map(repr, missing))} of {service!r} "
        f"(registered: {', '.join(sorted(known))})"
    )


def _check_known(target: _Target, found: tuple[int, str], *, strict: bool) -> None:
    code, problem = found
    if not problem or (code == 403 and not strict):
        return
    if strict:
        reason = f"{problem}; nothing was changed (--strict)"
        raise Refused(
            f"{code} {reason}; check the name with `baton services` / `baton instances`",
            code=code,
            reason=reason,
        )
    then = ": it applies once it registers" if code == 404 else ""
    warning = f"{problem}; changing it anyway{then} (--strict refuses)"
    if target.session.json:
        click.echo(json_error(code, warning), err=True)
    else:
        click.echo(f"baton: warning: {warning}", err=True)


class _KeyValueGroup(click.Group):
    """Reads `baton set SERVICE strategy=NAME` as `baton set SERVICE strategy NAME`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The group's only parameter is SERVICE (and --help), so args[1] is the command's
        # name: split it at the first "=" when what comes before names a command.
        if len(args) > 1:
            name, sep, value = args[1].partition("=")
            if sep and name in self.commands:
                args = [args[0], name, value, *args[2:]]
        return super().parse_args(ctx, args)


@click.group("set", cls=_KeyValueGroup)
@click.argument("service", callback=service_name)
@click.pass_context
def set_(ctx: click.Context, service: str) -> None:
    """Change SERVICE's config through the governor: one new revision per command.

    \b
    baton set orders strategy=round_robin        (or: strategy round_robin)
    baton set orders weight orders-1 50 --reason "new disk"
    baton set orders drain orders-2 --expected-revision 7
    baton set orders unset orders-1 weight       (drop an override; no field: all of them)
    baton set orders outlier consecutive_failures=3 base_ejection_s=10
    """
    session: Session = ctx.obj  # the root group's
    ctx.obj = _Target(session, service)


@set_.command()
@click.argument("name")
@_set_options
def strategy(name: str) -> None:
    """Pick with strategy NAME (round_robin, weighted, least_connections, ...)."""
    _send(strategy=name)


@set_.command()
@click.argument("x", metavar="X", type=float)
@_set_options
def threshold(x: float) -> None:
    """Protection threshold 0..1: at or below this healthy share, resolve panics."""
    _send(protect_threshold=x)


@set_.command()
@click.argument("seconds", type=float)
@_set_options
def warmup(seconds: float) -> None:
    """Ramp a newly registered instance's weight up over SECONDS."""
    _send(warmup_s=seconds)


@set_.command()
@click.argument("pairs", metavar="FIELD=VALUE...", nargs=-1, required=True, callback=key_values)
@_who_options
def outlier(pairs: dict[str, str]) -> None:
    """Outlier ejection: enabled, consecutive_failures, interval_s, base_ejection_s,
    max_ejection_s, max_ejected_percent, success_rate, probation; the fields not named
    keep theirs."""
    known = OutlierPatch.__struct_fields__
    unknown = sorted(set(pairs) - set(known))
    if unknown:
        raise click.UsageError(f"no outlier field {', '.join(unknown)}; use {', '.join(known)}")
    values: dict[str, object] = {}
    for name, text in pairs.items():
        try:
            values[name] = msgspec.json.decode(text)  # true, 3, 0.5
        except msgspec.DecodeError:
            values[name] = text  # the governor's rule says what it must be
    raw = msgspec.json.encode(values)
    try:
        patch = msgspec.json.decode(raw, type=OutlierPatch)
    except msgspec.ValidationError as exc:
        raise click.UsageError(explain(exc, raw, "outlier setting")) from None
    _send(outlier=patch)


def _override(instance: str, patch: OverridePatch | None) -> None:
    _send(instances={instance: patch})


@set_.command()
@click.argument("instance", callback=instance_ids)
@click.argument("n", metavar="N", type=int)
@_set_options
def weight(instance: str, n: int) -> None:
    """Override INSTANCE's weight (0..10000; 0 = no traffic)."""
    _override(instance, OverridePatch(weight=n))


@set_.command()
@click.argument("instance", callback=instance_ids)
@click.argument("n", metavar="N", type=int)
@_set_options
def port(instance: str, n: int) -> None:
    """Override the port that resolve hands out for INSTANCE."""
    _override(instance, OverridePatch(port=n))


@set_.command()
@click.argument("instance", callback=instance_ids)
@_set_options
def drain(instance: str) -> None:
    """Send INSTANCE no new traffic."""
    _override(instance, OverridePatch(drained=True))


@set_.command()
@click.argument("instance", callback=instance_ids)
@_set_options
def undrain(instance: str) -> None:
    """Send INSTANCE traffic again (drained: false)."""
    _override(instance, OverridePatch(drained=False))


@set_.command()
@click.argument("instance", callback=instance_ids)
@click.argument("pairs", metavar="KEY=VALUE...", nargs=-1, required=True, callback=key_values)
@_set_options
def metadata(instance: str, pairs: dict[str, str]) -> None:
    """Override INSTANCE's metadata keys; replaces its previous metadata override."""
    _override(instance, OverridePatch(metadata=pairs))


@set_.command()
@click.argument("instance", callback=instance_ids)
@click.argument("fields", nargs=-1, type=click.Choice([*_OVERRIDES, "all"]))
@_set_options
def unset(instance: str, fields: Sequence[str]) -> None:
    """Drop INSTANCE's overrides of FIELDS (all of them when none is named)."""
    if not fields or "all" in fields:
        _override(instance, None)
    else:
        _override(instance, OverridePatch(**dict.fromkeys(fields)))


@set_.command()
@click.option("--yes", is_flag=True, help="Yes, forget the config and deregister everything.")
@_set_options
@click.pass_context
def delete(ctx: click.Context, *, yes: bool) -> None:
    """Forget SERVICE's config and deregister all its instances (needs --yes)."""
    if not yes:
        target: _Target = ctx.obj
        raise click.UsageError(
            f"delete forgets the config of {target.service} and deregisters all its instances; "
            "add --yes if you mean it",
            ctx,
        )
    _send(delete=True)


@click.command()
@click.argument("service", callback=service_name)
@click.argument("rev", metavar="REV", type=click.IntRange(min=0))
@_who_options
@click.pass_context
def rollback(ctx: click.Context, service: str, rev: int) -> None:
    """Apply revision REV of SERVICE's config again, as a new revision."""
    session: Session = ctx.obj  # the root group's
    msg = Rollback(**_who(ctx), to_revision=rev)
    session.show(subjects.rollback(service), msg, ConfigApplied, output.applied)
