"""`baton`, the operator command line: a NATS client of the public v1 contract, nothing more.

`main` is the console script installed by the project (`[project.scripts]`).
"""

from __future__ import annotations

from services import logs
from services.cli.commands import cli

__all__ = ["cli", "main"]


def main() -> None:
    logs.configure("WARNING")  # stderr; the workers' own sentences reach people as errors
    cli(prog_name="baton")
