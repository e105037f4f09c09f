"""`baton ARGS` run to an exit code, with `--json` errors as JSON on stderr (needs click)."""

from __future__ import annotations

import errno
import os
import sys

import click

from services.cli.commands import cli
from services.cli.session import Failure, json_error

__all__ = ["run"]

_USAGE = 400  # the code a usage error has in `--json` mode (its exit code stays 2)


def _wants_json(args: list[str]) -> bool:
    """`--json` anywhere before `--`: an error before the options are read is JSON too."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def run(args: list[str]) -> int:
    """Run `baton ARGS`; return the exit code. With `--json`, every error is one JSON
    object on stderr, `{"code", "message"}`, so that scripts can parse it."""
    as_json = _wants_json(args)
    try:
        done = cli.main(args, prog_name="baton", standalone_mode=False)
    except click.ClickException as exc:
        if not as_json:
            exc.show()
        elif isinstance(exc, Failure):
            click.echo(exc.as_json(), err=True)
        else:  # click's own usage errors
            click.echo(json_error(_USAGE, exc.format_message()), err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # the reader went away (`baton watch | head`): end quietly, as click would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return done if isinstance(done, int) else 0
