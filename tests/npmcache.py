"""A Node script's npm packages, installed once under .baton/ (again when its lock changes).

    failed = npm_ci(SOURCE, CACHE, ("package.json", "package-lock.json", "client.mjs"))

The sources stay where they are (docs/, tests/): their files are copied to the cache and
node_modules grows there, never in the repository's tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["npm_ci"]


def npm_ci(source: Path, cache: Path, files: Iterable[str]) -> str:
    """Copy `files` from `source` to `cache` and `npm ci` there unless the same lock is
    installed already: "" when done, else npm's stderr (the next call tries again)."""
    cache.mkdir(parents=True, exist_ok=True)
    lock = (source / "package-lock.json").read_bytes()
    cached_lock = cache / "package-lock.json"
    fresh = cached_lock.exists() and cached_lock.read_bytes() == lock
    for name in files:
        shutil.copyfile(source / name, cache / name)
    if fresh and (cache / "node_modules" / "nats").is_dir():
        return ""
    done = subprocess.run(  # noqa: S603  # fixed arguments
        [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"],
        cwd=cache,
        env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        cached_lock.unlink(missing_ok=True)  # not fresh: try again next session
        return done.stderr.strip() or f"npm ci exited {done.returncode}"
    return ""
