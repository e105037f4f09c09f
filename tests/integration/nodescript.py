"""A script of tests/integration/node/ run under Node with npm `consul` on its path.

Each script prints one JSON object a line on stdout, or `{"error": ...}` when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["NodeScript", "node_script"]

SCRIPTS = Path(__file__).parent / "node"


class NodeScript:
    """A running script: its lines read in order, its stdin written."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        assert proc.stdin is not None
        self.stdout = proc.stdout
        self.stdin = proc.stdin

    async def line(
        self, want: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        """The first line from now for which `want` holds; an error line fails the test."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.stdout.readline()
                assert line, "the node process ended"
                seen: dict[str, Any] = json.loads(line)
                assert "error" not in seen, seen["error"]
                if want(seen):
                    return seen

    async def say(self, text: str) -> None:
        self.stdin.write(text.encode() + b"\n")
        await self.stdin.drain()


@contextlib.asynccontextmanager
async def node_script(name: str, node_path: Path, *args: str) -> AsyncIterator[NodeScript]:
    """`node/<name>` run with `args`, killed when the block ends."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPTS / name),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={"NODE_PATH": str(node_path), "PATH": "/usr/bin:/bin"},
    )
    try:
        yield NodeScript(proc)
    finally:
        proc.kill()
        await proc.wait()
