"""node-consul (npm `consul`, not ours): a Node service registers through the gateway,
keeps its TTL check passing, and its blocking-query watcher sees every change."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import reg
from httpgateway import stack

from schemas import subjects
from schemas.registry import Ack

if TYPE_CHECKING:
    from conftest import Events
    from natsserver import NatsServer

    from services.bus import Bus

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".baton" / "node"  # where `just node-clients` installs it (gitignored)
SCRIPT = Path(__file__).parent / "node" / "consul_watch.js"


@pytest.fixture(scope="module")
def node_consul() -> Path:
    """node-consul, installed the way `just node-clients` does when it is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    module = PREFIX / "node_modules" / "consul"
    if not module.exists():
        done = subprocess.run(  # noqa: S603
            ["npm", "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "consul@2"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install consul: {done.stderr.strip()[-300:]}")
    return PREFIX / "node_modules"


async def _next(lines: asyncio.StreamReader, want: Any, timeout: float = 15) -> dict[str, Any]:
    """The first JSON line from the watcher for which `want(ids)` holds."""
    async with asyncio.timeout(timeout):
        while True:
            line = await lines.readline()
            assert line, "the node process ended"
            seen = json.loads(line)
            assert "error" not in seen, seen["error"]
            if want(seen["ids"]):
                return dict(seen)


async def test_node_consul_registers_passes_and_watches(
    nats_server: NatsServer, bus: Bus, events: Events, node_consul: Path
) -> None:
    async with stack(nats_server.url) as http:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            str(http.gateway.http_port),
            "web",
            "web-node",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={"NODE_PATH": str(node_consul), "PATH": "/usr/bin:/bin"},
        )
        assert proc.stdout is not None
        assert proc.stdin is not None
        try:
            first = await _next(proc.stdout, lambda ids: ids.get("web-node") == "passing")
            await bus.request(subjects.register("web"), reg("web-nats", ttl_s=30.0), Ack)
            grown = await _next(proc.stdout, lambda ids: "web-nats" in ids)
            assert int(grown["index"]) > int(first["index"])
            proc.stdin.write(b"stop\n")  # its passes stop: critical, then expired
            await proc.stdin.drain()
            await _next(proc.stdout, lambda ids: ids.get("web-node") == "critical")
            gone = await _next(proc.stdout, lambda ids: "web-node" not in ids)
            assert gone["ids"] == {"web-nats": "passing"}
            await events.wait_for("expired", "web-node")
        finally:
            proc.kill()
            await proc.wait()
