"""`baton`, the operator command line: a NATS client of the public v1 contract, nothing more.

`main` is the console script installed by the project (`[project.scripts]`). It needs the
`cli` extra (click); without it, it says so instead of a traceback.
"""

from __future__ import annotations

import sys

from services import logs

__all__ = ["main"]


def main() -> None:
    try:
        from services.cli.entry import run  # noqa: PLC0415  # click is the `cli` extra
    except ModuleNotFoundError as exc:
        if exc.name != "click":
            raise
        sys.exit("baton: the command line needs click: pip install 'baton[cli]'")
    logs.configure("WARNING")  # stderr; the workers' own sentences reach people as errors
    sys.exit(run(sys.argv[1:]))
